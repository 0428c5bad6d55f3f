"""The `autointerp` task: latent examples, the judge and its prompts."""

"""The `core` task: sparsity, latent density, reconstruction quality and CE/KL with the SAE spliced in."""

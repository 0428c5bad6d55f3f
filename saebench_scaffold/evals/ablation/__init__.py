"""Ablation conditions (scaffold, top-r PCs, aligned latents…), the CE code `core` shares, and the `ce_ablation` task."""

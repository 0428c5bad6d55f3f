"""saebench-scaffold: SAE evaluation that keeps the dense scaffold apart from the sparse latents."""

__version__ = "0.1.0"

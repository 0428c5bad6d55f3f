"""SAEs: one protocol (`base.SAE`), one file per architecture, loaders for foreign formats."""

from .base import SAE, SAEConfig, own_hook
from .loaders import detect_format, load_sae
from .registry import ARCHITECTURES, make_sae

__all__ = ["SAE", "SAEConfig", "ARCHITECTURES", "make_sae", "load_sae", "detect_format", "own_hook"]

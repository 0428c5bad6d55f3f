"""saebench-scaffold: SAE evaluation that keeps the dense scaffold apart from the sparse latents.

`from saebench_scaffold import run_eval, EvalRequest` is the Python entry to `eval`; both are loaded
on first use so that importing the package (for its version, say) does not import torch."""

__version__ = "0.1.0"

_LAZY = {"run_eval": "execution", "EvalRequest": "execution"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

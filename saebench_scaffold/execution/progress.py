"""Progress across the units of a sweep: done / running / failed, with an ETA (tqdm)."""

from __future__ import annotations

import importlib
import os

from tqdm.auto import tqdm

_LIBRARY_SWITCHES = (("transformers.utils.logging", "disable_progress_bar"),
                     ("huggingface_hub.utils", "disable_progress_bars"),
                     ("datasets.utils.logging", "disable_progress_bar"))


def silence_library_bars() -> None:
    """--quiet also means the bars the libraries draw themselves (transformers' "Loading weights",
    hub downloads, datasets' map/filter), which our own `progress` flag does not reach."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
    for module, switch in _LIBRARY_SWITCHES:
        try:
            getattr(importlib.import_module(module), switch)()
        except (ImportError, AttributeError):  # a library that is not installed draws no bar
            pass


class UnitProgress:
    def __init__(self, total: int, enabled: bool = True):
        self.done = self.running = self.failed = 0
        self.bar = tqdm(total=total, unit="unit", desc="units", disable=not enabled, dynamic_ncols=True)
        self._show()

    def started(self, n: int = 1) -> None:
        self.running += n
        self._show()

    def finished(self, ok: bool, was_running: bool = True) -> None:
        self.running -= was_running
        self.done += ok
        self.failed += not ok
        self.bar.update(1)  # tqdm's ETA: units left at the mean rate so far
        self._show()

    def _show(self) -> None:
        self.bar.set_postfix(done=self.done, running=self.running, failed=self.failed, refresh=True)

    def close(self) -> None:
        self.bar.close()

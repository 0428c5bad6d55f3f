"""Progress across the units of a sweep: done / running / failed, with an ETA (tqdm)."""

from __future__ import annotations

from tqdm.auto import tqdm


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

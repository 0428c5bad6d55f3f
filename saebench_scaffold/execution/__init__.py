"""Execution: plan the units of an `eval` or a sweep, run them with an executor, report progress.

Layers, each importing only the ones before it: request -> checkpoints -> plan -> units (one unit
run in a process) -> executors (serial.py, ray_executor.py) -> run.py (picks the executor) ->
sweep.py (sweep files become requests)."""

from .request import PRESETS, EvalRequest
from .run import run_eval
from .summary import summary_table

__all__ = ["PRESETS", "EvalRequest", "run_eval", "summary_table"]

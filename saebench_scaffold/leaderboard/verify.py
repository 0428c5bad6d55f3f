"""`leaderboard verify SUBMISSION/CHECKPOINT`: re-run a row's tasks from its provenance and compare.

The re-run goes through the runner's public `run_eval` with the recorded model, hook, seed and
`--limit`, and the recorded `eval_config` passed as `--set` overrides (so budgets, datasets and
thresholds are the recorded ones). The checkpoint is the recorded path (or `--checkpoint`); its
sha256 must be the recorded one, else nothing is run. Each headline metric (the task's
`summary_metrics`) is compared: |recorded − re-run| ≤ tolerance × max(1, |recorded|).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..results.schema import read_result
from ..settings import UserError
from .store import existing_board
from .validate import check_name


@dataclass
class Comparison:
    task: str
    metric: str
    recorded: float | None
    rerun: float | None
    ok: bool


def verify(row: str, board: Path, tasks: list[str] | None = None, checkpoint: str | None = None,
           tolerance: float = 1e-3, data_dir: str | None = None, cache_dir: str | None = None,
           include_paths: list | None = None, device: str = "auto") -> list[Comparison]:
    from ..evals.registry import TaskRegistry
    from ..execution import EvalRequest, run_eval
    from ..execution.checkpoints import checkpoint_sha256

    submission, _, ckpt = row.partition("/")
    check_name(submission, "submission name")
    check_name(ckpt, "checkpoint name")
    folder = existing_board(board) / submission / ckpt
    if not folder.is_dir():
        raise UserError(f"no row {row} on the board {board}")
    files = {p.stem: p for p in sorted(folder.glob("*.json"))}
    wanted = tasks or sorted(files)
    missing = [t for t in wanted if t not in files]
    if missing:
        raise UserError(f"row {row} has no result for {', '.join(missing)} (it has {', '.join(sorted(files))})")
    recorded = {t: read_result(files[t]) for t in wanted}
    first = recorded[wanted[0]]
    path = Path(checkpoint or first.provenance.checkpoint_path)
    if not path.exists():
        raise UserError(f"checkpoint {path} (recorded in {files[wanted[0]]}) is not at hand; pass --checkpoint PATH")
    sha = checkpoint_sha256(path)
    if sha != first.provenance.checkpoint_sha256:
        raise UserError(f"checkpoint {path} has sha256 {sha[:12]}…, the row records {first.provenance.checkpoint_sha256[:12]}…")
    registry = TaskRegistry(include_paths)
    for task, res in recorded.items():  # another version's numbers are not expected to reproduce
        version = registry.get(task).instantiate().version
        if version != res.provenance.task_version:
            raise UserError(f"{files[task]} was made by {task} version {res.provenance.task_version}; this package runs "
                            f"version {version}, whose numbers need not match")
    out: list[Comparison] = []
    for task, res in recorded.items():
        prov = res.provenance
        with tempfile.TemporaryDirectory(prefix="saebench_verify_") as tmp:
            run_eval(EvalRequest(checkpoints=[str(path)], tasks=[task], model=prov.model.get("name"), hook=prov.hook_name,
                                 limit=prov.limit, data_dir=data_dir, cache_dir=cache_dir, output_dir=tmp, device=device,
                                 seed=prov.seed, force=True, include_paths=list(include_paths or []),
                                 overrides={task: dict(res.eval_config)}, progress=False))
            rerun = read_result(next(Path(tmp).rglob(f"{task}.json")))
        summary = getattr(registry.get(task).load(), "summary_metrics", ())
        for category, key in summary:
            a = res.eval_result_metrics.get(category, {}).get(key)
            b = rerun.eval_result_metrics.get(category, {}).get(key)
            ok = isinstance(a, (int, float)) and isinstance(b, (int, float)) and abs(a - b) <= tolerance * max(1.0, abs(a))
            out.append(Comparison(task, f"{category}.{key}", a, b, ok))
    return out

"""Helpers for the scale-out tests and benchmark: tiny checkpoints at an early hook (so building a
fresh activation cache costs seconds), and the CLI run as real processes on the worktree's code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from saebench_scaffold.saes import SAEConfig, make_sae

REPO = Path(__file__).resolve().parents[2]
EARLY_HOOK = "blocks.2.hook_resid_post"  # 3 of 30 layers: caches build ~10x faster than at layer 14
CLI = [sys.executable, "-c", "from saebench_scaffold.cli import app; app()"]


def tiny_checkpoints(folder: Path, n: int, hook: str = EARLY_HOOK, d_in: int = 576) -> list[str]:
    """n random BatchTopK hybrids of different widths and ranks, saved in our format."""
    import torch

    paths = []
    for i in range(n):
        torch.manual_seed(100 + i)
        sae = make_sae(SAEConfig("batchtopk", d_in, 64 * (i + 1), k=8, scaffold_rank=2 * i, hook_name=hook))
        paths.append(str(sae.save(folder / f"ckpt{i}")))
    return paths


def cache_dir_with_shared_model(root: Path) -> Path:
    """A fresh cache dir (no activation caches) whose model copy is the shared one (no 20 s dequantize)."""
    from saebench_scaffold.settings import cache_dir

    root.mkdir(parents=True, exist_ok=True)
    (root / "models").symlink_to(cache_dir() / "models", target_is_directory=True)
    return root


def cli_env(**extra) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]), **extra}
    return env


def start_cli(args: list[str], **env) -> subprocess.Popen:
    return subprocess.Popen(CLI + args, cwd=REPO, env=cli_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def metrics(out_dir: Path) -> dict[tuple[str, str], dict]:
    """{(checkpoint, task): eval_result_metrics} of every result file under out_dir."""
    return {(p.parent.name, p.stem): json.loads(p.read_text())["eval_result_metrics"] for p in sorted(out_dir.rglob("*.json"))}


def build_counts(cache_root: Path) -> dict[str, int]:
    """How many times each shard under cache_root was built (from the caches' builds.log)."""
    counts: dict[str, int] = {}
    for log in cache_root.glob("*/*/builds.log"):
        for line in log.read_text().splitlines():
            key = f"{log.parent.parent.name}/{log.parent.name}/{line.split()[0]}"
            counts[key] = counts.get(key, 0) + 1
    return counts

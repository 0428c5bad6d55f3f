"""`leaderboard verify`: a row re-run from its provenance reproduces its headline metrics; a tampered
row does not. The row is made here by `eval --limit 256` of core on the embedded Wikipedia sample
(offline, no data directory), so that re-running it takes seconds."""

from __future__ import annotations

from pathlib import Path

import pytest

from lb_helpers import edit_json

from saebench_scaffold import leaderboard as lb
from saebench_scaffold.leaderboard.verify import verify
from saebench_scaffold.settings import UserError

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_core_row_verifies_and_tampered_row_fails(tmp_path, offline):
    from saebench_scaffold.execution import EvalRequest, run_eval

    results = tmp_path / "results"
    run_eval(EvalRequest(checkpoints=[str(REPO / "baselines" / "batchtopk_r24")], tasks="core", limit=256, output_dir=str(results), progress=False))
    board = tmp_path / "board"
    lb.submit(results, "bundled", board)
    good = verify("bundled/batchtopk_r24", board, ["core"])
    assert good and all(c.ok for c in good), good
    assert {c.metric for c in good} >= {"sparsity.l0", "reconstruction_quality.fvu"}

    def tamper(d):  # consistent within the file (so it passes validation), but not what the checkpoint gives
        rq = d["eval_result_metrics"]["reconstruction_quality"]
        rq["fvu"] += 0.01
        rq["explained_variance"] = 1 - rq["fvu"]
    edit_json(board / "submissions" / "bundled" / "batchtopk_r24" / "core.json", tamper)
    lb.validate(board)
    bad = verify("bundled/batchtopk_r24", board, ["core"])
    mismatched = [c.metric for c in bad if not c.ok]
    assert "reconstruction_quality.fvu" in mismatched, bad
    assert all(m in ("reconstruction_quality.fvu", "reconstruction_quality.explained_variance") for m in mismatched), bad

    with pytest.raises(UserError, match="sha256"):  # another checkpoint than the recorded one
        verify("bundled/batchtopk_r24", board, ["core"], checkpoint=str(REPO / "baselines" / "batchtopk_r0"))
    edit_json(board / "submissions" / "bundled" / "batchtopk_r24" / "core.json",
              lambda d: d["provenance"].update(task_version=99))
    with pytest.raises(UserError, match="core version 99; this package runs version"):  # refused before any work
        verify("bundled/batchtopk_r24", board, ["core"])

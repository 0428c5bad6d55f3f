"""Offline without a data directory: `wikipedia` comes from the sample embedded in the package (with a
notice, recorded in provenance, at its own context offsets); any other dataset fails at once in one
line instead of retrying the hub."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from saebench_scaffold.sources import data
from saebench_scaffold.settings import UserError

REPO = Path(__file__).resolve().parents[2]


def test_non_embedded_dataset_fails_at_once_offline(offline):
    t0 = time.perf_counter()
    with pytest.raises(UserError) as info:
        next(iter(data.iterate("ag_news")))
    assert time.perf_counter() - t0 < 2
    assert "HF_HUB_OFFLINE is set" in str(info.value) and "classification/ag_news/test.csv" in str(info.value)
    assert "\n" not in str(info.value)


def test_unreachable_hub_is_detected_quickly(monkeypatch):
    monkeypatch.delenv("SAEBENCH_DATA_DIR", raising=False)
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: connection refused
    t0 = time.perf_counter()
    with pytest.raises(UserError, match=r"hub \(http://127.0.0.1:9\) is unreachable"):
        data.dataset_id("mmlu")
    assert time.perf_counter() - t0 < data.HUB_PROBE_TIMEOUT_S + 1


def test_a_hub_that_answers_counts_as_online(monkeypatch):
    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        assert data.hub_offline_reason() is None
        monkeypatch.setenv("HF_DATASETS_OFFLINE", "true")
        assert data.hub_offline_reason() == "HF_DATASETS_OFFLINE is set"
    finally:
        server.shutdown()


def test_embedded_wikipedia_source_and_provenance(offline, capsys):
    data.registry._NOTICED.discard("wikipedia")
    ident = data.dataset_id("wikipedia")
    data.dataset_id("wikipedia")
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "embedded English Wikipedia sample" in notes[0] and "CC BY-SA" in notes[0]
    assert ident["source"] == "embedded:wikipedia_en_small.jsonl.xz" and len(ident["sha256"]) == 64
    assert ident["context_offsets"] == {"train": 0, "eval": 2048, "ce": 4096}
    first = next(iter(data.iterate("wikipedia")))
    assert isinstance(first, str) and len(first) > 200
    assert (data.embedded_path("DATA_LICENSE.md")).read_text().count("CC BY-SA") >= 1


def test_token_sets_map_onto_the_embedded_layout_and_stay_disjoint(offline):
    from saebench_scaffold.evals.base import CE_OFFSET_CONTEXTS, EVAL_OFFSET_CONTEXTS, TRAIN_OFFSET_CONTEXTS

    assert data.place_token_set("wikipedia", TRAIN_OFFSET_CONTEXTS, 1792) == 0  # the 200k-token PCA fit
    assert data.place_token_set("wikipedia", EVAL_OFFSET_CONTEXTS, 1088) == 2048  # core's default density set
    assert data.place_token_set("wikipedia", CE_OFFSET_CONTEXTS, 64) == 4096
    assert data.place_token_set("wikipedia", EVAL_OFFSET_CONTEXTS + 10, 5) == 2058
    with pytest.raises(UserError, match="run past the density/FVU token set's end at 4096"):
        data.place_token_set("wikipedia", EVAL_OFFSET_CONTEXTS, 2049)
    with pytest.raises(UserError, match="training token set's end at 2048"):
        data.place_token_set("wikipedia", TRAIN_OFFSET_CONTEXTS, 2100)


@pytest.mark.needs_data("wikipedia")
def test_full_corpora_keep_their_offsets(data_dir):
    assert data.place_token_set("wikipedia", 20_000, 29_952, data_dir) == 20_000  # --preset saebench's density set
    with pytest.raises(UserError, match="end at 50000"):
        data.place_token_set("wikipedia", 20_000, 30_001, data_dir)


@pytest.mark.slow
def test_embedded_sample_holds_the_default_core_budget(offline, lm):
    """Density (1,088 contexts) and CE (64 contexts, one shard) fit inside their regions: the last CE
    context the default budget reads exists."""
    last = data.EMBEDDED_LAYOUT.ce + 63
    assert len(list(data.token_contexts(lm, "wikipedia", 1, skip_contexts=last))) == 1


@pytest.mark.slow
def test_batched_tokenization_gives_the_contexts_of_one_call_per_document(offline, lm):
    """`token_contexts` and the example caches tokenize documents in growing batches (faster); the
    contexts, skipped ones included, and the ids of short texts (an empty one too) are exactly those
    of one tokenizer call per document."""
    def one_call_per_document(n, skip, body=data.DEFAULT_CONTEXT - 1):
        out, produced = [], 0
        for text in data.iterate("wikipedia"):
            ids = lm.tokenizer(text, add_special_tokens=False).input_ids
            for start in range(0, len(ids) - body + 1, body):
                if produced >= skip + n:
                    return out
                if produced >= skip:
                    out.append([lm.bos_token_id] + ids[start:start + body])
                produced += 1
        return out

    for n, skip in ((3, 0), (40, 700)):
        got = [t.tolist() for t in data.token_contexts(lm, "wikipedia", n, skip_contexts=skip)]
        assert got == one_call_per_document(n, skip)
    texts = ["", "Ünïcode — and emoji 🙂", "two\nlines", *[f"example {i} " * (i % 7) for i in range(40)]]
    assert list(data.document_ids(lm, texts)) == [lm.tokenizer(t, add_special_tokens=False).input_ids for t in texts]


@pytest.mark.slow
def test_main_job_offline_without_data_dir(tmp_path):
    """scripts/main.sh's eval, from a clean environment with no data dir and no hub (small --limit)."""
    env = {k: v for k, v in os.environ.items() if k != "SAEBENCH_DATA_DIR"}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-c", "from saebench_scaffold.cli import app; app()", "eval",
           str(REPO / "baselines" / "batchtopk_r24"), str(REPO / "baselines" / "batchtopk_r0"),
           "--tasks", "core", "--limit", "256", "--output-dir", str(tmp_path / "results"), "--quiet"]
    r = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [line.split() for line in r.stdout.splitlines() if line.startswith("batchtopk")]
    assert r.stdout.startswith("core\n") and len(rows) == 2 and all(row[1] == "ok" for row in rows), r.stdout
    assert r.stderr.count("uses the embedded English Wikipedia sample") == 1
    assert "it/s]" not in r.stderr and "Loading weights" not in r.stderr, r.stderr  # --quiet: no bars, ours or theirs
    doc = json.loads((tmp_path / "results" / "batchtopk_r24" / "core.json").read_text())
    assert doc["provenance"]["datasets"][0]["source"] == "embedded:wikipedia_en_small.jsonl.xz"
    assert doc["provenance"]["token_counts"]["density_tokens"] == 256

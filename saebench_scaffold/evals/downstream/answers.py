"""Answers under checkpoint-independent conditions, kept on disk across `eval` calls.

clean, the top-r PCs, the random subspace and zero ablation do not depend on the checkpoint: their
answer to a request (log p(continuation), greedy?) is the same for every checkpoint of a rank r.
`downstream` keeps them per eval call (`ctx.memo`) and here across calls, one JSON file per condition
under `<cache dir>/downstream_answers/`, named by a hash of everything the answers depend on
(`identity`: model weights and dtype, device, max_length, and for edited conditions the hook, r,
the PCA fit, the seed, ce_ablation's condition version). Entries are keyed by a hash of the request's
tokens (context and continuation), so the task, its version and the documents need no key of their
own: a changed prompt is a new request. As the activation caches (activations/shards.py): one
writer at a time under a file lock, files replaced atomically (a reader sees the old file or the new
one), a file that does not parse is ignored and rewritten.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from filelock import FileLock

from ...settings import atomic_write

FORMAT = 1
Answer = tuple[float, bool]


def request_id(context: tuple[int, ...], continuation: tuple[int, ...]) -> str:
    """A request's key: a hash of its context and continuation tokens (where one ends counts)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(len(context).to_bytes(4, "little"))
    h.update(np.asarray(context + continuation, dtype=np.int64).tobytes())
    return h.hexdigest()


class AnswerStore:
    """The kept answers of one condition (`identity`: what they depend on, JSON-serialisable)."""

    def __init__(self, root: Path, identity: dict):
        self.identity = {"format": FORMAT, **identity}
        digest = hashlib.sha256(json.dumps(self.identity, sort_keys=True, default=str).encode()).hexdigest()[:20]
        self.path = Path(root) / "downstream_answers" / f"{digest}.json"

    def load(self) -> dict[str, Answer]:
        try:
            blob = json.loads(self.path.read_text())
            if blob.get("identity") != json.loads(json.dumps(self.identity, default=str)):
                return {}
            return {k: (float(v[0]), bool(v[1])) for k, v in blob["answers"].items()}
        except (FileNotFoundError, ValueError, KeyError, TypeError, IndexError):
            return {}

    def save(self, answers: dict[str, Answer]) -> int:
        """Merge `answers` into the file (under its lock); the number of entries it then holds."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.path) + ".lock"):
            kept = self.load()
            if not set(answers) - set(kept):
                return len(kept)
            kept.update(answers)
            atomic_write(self.path, json.dumps({"identity": self.identity, "answers": kept}, default=str))
            return len(kept)

"""Dataset registry. Every entry has a local loader (files in the data directory, laid out like
../shared/data) and a hub loader (public Hugging Face name), so offline machines and online users
run the same code.

Where a dataset comes from: the data directory when one is set; else the hub; else — offline with no
data directory — a small sample shipped inside the package (`embedded_data/`, English Wikipedia)
for the datasets that have one, with a one-line notice. Any other dataset fails at once then. Also
here: a dataset's identity (source and content hash) for provenance and cache keys.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import lzma
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

from ...settings import DATA_DIR_ENV, UserError, data_dir
from .layout import EMBEDDED_LAYOUT

HUB_PROBE_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class LabeledExample:
    text: str
    label: str


@dataclass
class DatasetEntry:
    name: str
    kind: str  # "text" | "labeled" | "mmlu"
    local_path: str  # relative to the data directory
    hub_name: str
    local_loader: Callable[[Path], Iterator]
    hub_loader: Callable[[], Iterator]
    description: str = ""
    labels: list[str] = field(default_factory=list)
    path: Path | None = None  # a file outside the data directory (a user's labeled file): always local
    embedded_file: str = ""
    """File in the package's `embedded_data/` used offline when there is no data directory."""
    embedded_note: str = ""
    """What the embedded file is (corpus, size, licence): for the notice and provenance."""


@dataclass(frozen=True)
class DataSource:
    kind: str  # "local" (data directory) | "file" (a user's file) | "hub" | "embedded" (shipped in the package)
    path: Path | None = None


REGISTRY: dict[str, DatasetEntry] = {}


def register(entry: DatasetEntry) -> DatasetEntry:
    if entry.name in REGISTRY:
        raise ValueError(f"dataset {entry.name} registered twice")
    REGISTRY[entry.name] = entry
    return entry


_DECLARED: ContextVar[dict[str, DatasetEntry]] = ContextVar("saebench_scaffold_declared_datasets", default={})
"""Datasets task files declare (`datasets:`), known while a run that loaded them is in progress."""


@contextmanager
def declared(entries: dict[str, DatasetEntry]):
    """Make a task registry's file-declared datasets known inside this block (this thread and context):
    each registry keeps its own, and the built-in `REGISTRY` is never written."""
    token = _DECLARED.set({**_DECLARED.get(), **entries})
    try:
        yield
    finally:
        _DECLARED.reset(token)


def get_entry(name: str) -> DatasetEntry:
    entry = _DECLARED.get().get(name) or REGISTRY.get(name)
    if entry is None:
        raise UserError(f"unknown dataset {name!r}; known: {', '.join(sorted({**REGISTRY, **_DECLARED.get()}))}")
    return entry


def resolve_source(name: str, data_dir_override=None) -> tuple[DatasetEntry, DataSource]:
    """The entry and where its data comes from: the data directory, else the hub, else (offline)
    the embedded sample; offline without either, a one-line error at once."""
    entry = get_entry(name)
    if entry.path is not None:
        if not entry.path.is_file():
            raise UserError(f"dataset {name}: {entry.path} not found")
        return entry, DataSource("file", entry.path)
    root = data_dir(data_dir_override)
    if root is not None:
        path = root / entry.local_path
        if not path.exists():
            raise UserError(f"dataset {name}: {path} not found in the data directory (--data-dir / $SAEBENCH_DATA_DIR)")
        return entry, DataSource("local", path)
    offline = hub_offline_reason()
    if offline is None:
        return entry, DataSource("hub")
    if entry.embedded_file:
        _notice_embedded(entry, offline)
        return entry, DataSource("embedded", embedded_path(entry.embedded_file))
    raise UserError(f"dataset {name}: no data directory and {offline}; point --data-dir or ${DATA_DIR_ENV} "
                    f"at a folder holding {entry.local_path}")


def iterate(name: str, data_dir_override=None) -> Iterator:
    entry, source = resolve_source(name, data_dir_override)
    if source.path is not None:
        return entry.local_loader(source.path)
    return _from_hub(entry)


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_offline_reason() -> str | None:
    """None when the Hugging Face hub can be used; else why not, for messages. Honours
    HF_HUB_OFFLINE / HF_DATASETS_OFFLINE, then asks the hub once per process with a short timeout
    (the hub clients themselves retry for ~30 s before giving up)."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if _env_true(var):
            return f"{var} is set"
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    return _probe_hub(endpoint)


@lru_cache(maxsize=None)
def _probe_hub(endpoint: str) -> str | None:
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=HUB_PROBE_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        return None  # the hub answered (any status): it is reachable
    except (OSError, ValueError) as err:  # URLError, timeouts, refused connections, bad HF_ENDPOINT
        reason = getattr(err, "reason", err)
        return f"the Hugging Face hub ({endpoint}) is unreachable ({reason})"
    return None


def embedded_path(file_name: str) -> Path:
    return Path(str(importlib.resources.files("saebench_scaffold.sources") / "embedded_data" / file_name))


_NOTICED: set[str] = set()


def _notice_embedded(entry: DatasetEntry, why: str) -> None:
    if entry.name not in _NOTICED:
        _NOTICED.add(entry.name)
        print(f"note: {why} and no data directory: dataset {entry.name} uses the embedded {entry.embedded_note}",
              file=sys.stderr)


def _from_hub(entry: DatasetEntry) -> Iterator:
    try:
        yield from entry.hub_loader()
    except Exception as err:  # network or hub errors: tell the user how to work offline
        raise UserError(
            f"dataset {entry.name}: could not load {entry.hub_name} from the hub ({type(err).__name__}); "
            f"offline, point --data-dir or $SAEBENCH_DATA_DIR at a folder holding {entry.local_path}"
        ) from err


def dataset_id(name: str, data_dir_override=None) -> dict:
    """Identity of a dataset for provenance and cache keys: name, source and a content hash (the
    embedded sample also says what it is and where its token sets start)."""
    entry, source = resolve_source(name, data_dir_override)
    if source.kind == "hub":
        return {"name": name, "source": f"hub:{entry.hub_name}", "sha256": None}
    if source.kind == "embedded":
        return {"name": name, "source": f"embedded:{entry.embedded_file}", "sha256": file_sha256(source.path),
                "description": entry.embedded_note, "context_offsets": asdict(EMBEDDED_LAYOUT)}
    where = f"file:{entry.path}" if source.kind == "file" else f"local:{entry.local_path}"
    return {"name": name, "source": where, "sha256": file_sha256(source.path)}


_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """The content hash of a file; of a folder (a data set saved as split files), the hash of its
    files' names and hashes, hidden files left out."""
    if path.is_dir():
        h = hashlib.sha256()
        for child in sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")):
            h.update(f"{child.relative_to(path).as_posix()}\0{file_sha256(child)}\n".encode())
        return h.hexdigest()
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def hub_dataset(name: str, config: str | None = None, split: str = "train", streaming: bool = True):
    from datasets import load_dataset

    return load_dataset(name, config, split=split, streaming=streaming)


def read_jsonl(path: Path) -> Iterator[dict]:
    with (lzma.open if path.suffix == ".xz" else open)(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)

"""Dataset registry. Every entry has a local loader (files in the data directory, laid out like
../shared/data) and a hub loader (public Hugging Face name), so offline machines and online users
run the same code. Text corpora become fixed-length token contexts; labeled sets become
(text, label) examples.

Where a dataset comes from: the data directory when one is set; else the hub; else — offline with no
data directory — a small sample shipped inside the package (`embedded_data/`, English Wikipedia)
for the datasets that have one, with a one-line notice. Any other dataset fails at once then.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.resources
import json
import lzma
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path

import torch

from ..settings import DATA_DIR_ENV, UserError, data_dir

DEFAULT_CONTEXT = 128  # SAEBench's context length
HUB_PROBE_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class CorpusLayout:
    """Where the disjoint token sets of a text corpus start, in contexts: training (the bundled
    baselines and PCA fits), density/FVU, and CE. Each set must end before the next one starts."""

    train: int
    eval: int
    ce: int

    def starts(self) -> tuple[int, int, int]:
        return self.train, self.eval, self.ce


# The full corpora (the local Wikipedia sample holds ~58,900 contexts; the hub's far more).
FULL_LAYOUT = CorpusLayout(train=0, eval=20_000, ce=50_000)
# The embedded sample holds ~5,900 contexts (SmolLM2 tokenizer): room for a 200k-token PCA fit,
# 2,048 density contexts (260k tokens; `core` reads 131k by default) and ~1,800 CE contexts.
EMBEDDED_LAYOUT = CorpusLayout(train=0, eval=2_048, ce=4_096)
_REGION_NAMES = ("training", "density/FVU", "CE")


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


def corpus_layout(name: str, data_dir_override=None) -> CorpusLayout:
    _, source = resolve_source(name, data_dir_override)
    return EMBEDDED_LAYOUT if source.kind == "embedded" else FULL_LAYOUT


def place_token_set(name: str, offset: int, n_contexts: int, data_dir_override=None) -> int:
    """Start, in the corpus actually read, of a token set given by its `offset` in FULL_LAYOUT
    (`region start + k` means k contexts into that region in every layout). Refuses a set that would
    run into the next region, so density, CE and training tokens never overlap."""
    full, actual = FULL_LAYOUT.starts(), corpus_layout(name, data_dir_override).starts()
    region = max(i for i, start in enumerate(full) if start <= offset)
    start = actual[region] + offset - full[region]
    end = actual[region + 1] if region + 1 < len(actual) else None
    if end is not None and start + n_contexts > end:
        raise UserError(f"dataset {name}: {n_contexts} contexts from context {start} run past the {_REGION_NAMES[region]} "
                        f"token set's end at {end} ({(end - actual[region]) * (DEFAULT_CONTEXT - 1):,} tokens there); "
                        f"ask for fewer tokens or point --data-dir at a larger corpus")
    return start


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
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def _hub(name: str, config: str | None = None, split: str = "train", streaming: bool = True):
    from datasets import load_dataset

    return load_dataset(name, config, split=split, streaming=streaming)


# ---- text corpora -------------------------------------------------------------------------------

def _jsonl(path: Path) -> Iterator[dict]:
    with (lzma.open if path.suffix == ".xz" else open)(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


register(DatasetEntry(
    name="wikipedia", kind="text", local_path="text/wikipedia_en_sample.jsonl",
    hub_name="wikimedia/wikipedia:20231101.en",
    local_loader=lambda p: (r["text"] for r in _jsonl(p)),
    hub_loader=lambda: (r["text"] for r in _hub("wikimedia/wikipedia", "20231101.en")),
    description="English Wikipedia articles (activation collection: training, density, CE)",
    embedded_file="wikipedia_en_small.jsonl.xz",
    embedded_note="English Wikipedia sample (1,700 articles, CC BY-SA; see embedded_data/DATA_LICENSE.md)",
))
register(DatasetEntry(
    name="openwebtext", kind="text", local_path="text/openwebtext.jsonl",
    hub_name="Skylion007/openwebtext",
    local_loader=lambda p: (r["text"] for r in _jsonl(p)),
    hub_loader=lambda: (r["text"] for r in _hub("Skylion007/openwebtext")),
    description="OpenWebText, SAEBench's corpus (hub only unless a local copy exists)",
))


def document_ids(lm, texts: Iterable[str], first_batch: int = 4, max_batch: int = 128) -> Iterator[list[int]]:
    """Token ids of each document, in order. A fast tokenizer encodes a list of documents on all
    cores: 2.3x faster than one call per document on 2 cores (measured on 3,000 Wikipedia articles,
    the same ids), which matters when a token set starts 50,000 contexts into the corpus (the CE
    set: 6.4M tokens to count before the first one used). Batches grow from `first_batch` so a small
    request does not tokenize many documents it never reads. Other tokenizers (slow ones gain
    nothing from a list; stand-ins may take only a string) get one call per document."""
    if not getattr(lm.tokenizer, "is_fast", False):
        yield from (lm.tokenizer(text, add_special_tokens=False).input_ids for text in texts)
        return
    batch, size = [], first_batch
    for text in texts:
        batch.append(text)
        if len(batch) == size:
            yield from lm.tokenizer(batch, add_special_tokens=False).input_ids
            batch, size = [], min(2 * size, max_batch)
    if batch:
        yield from lm.tokenizer(batch, add_special_tokens=False).input_ids


def token_contexts(lm, corpus: str, n_contexts: int, ctx_len: int = DEFAULT_CONTEXT,
                   data_dir_override=None, skip_contexts: int = 0) -> Iterator[torch.Tensor]:
    """Yield [ctx_len] token tensors: BOS followed by ctx_len-1 tokens of one document, documents
    packed in order (a long document gives several contexts, a short one's tail is dropped, as
    SAELens' `prepend_bos` packing does per document). Deterministic for a given corpus file."""
    body = ctx_len - 1
    produced = 0
    for ids in document_ids(lm, iterate(corpus, data_dir_override)):
        for start in range(0, len(ids) - body + 1, body):
            if produced >= skip_contexts + n_contexts:
                return
            if produced >= skip_contexts:
                yield torch.tensor([lm.bos_token_id] + ids[start:start + body], dtype=torch.long)
            produced += 1
    if produced < skip_contexts + n_contexts:
        raise UserError(f"dataset {corpus} has only {produced} contexts of {ctx_len} tokens; asked for {skip_contexts + n_contexts}")


# ---- labeled classification sets ----------------------------------------------------------------

_AG_NEWS = ["World", "Sports", "Business", "Sci/Tech"]


def _ag_news_local(p: Path):
    with open(p, encoding="utf-8") as f:
        for row in csv.DictReader(f):
            yield LabeledExample(f"{row['title']}. {row['description']}", _AG_NEWS[int(row["label"]) - 1])


def _ag_news_hub():
    for r in _hub("fancyzhx/ag_news", split="test"):
        yield LabeledExample(r["text"], _AG_NEWS[int(r["label"])])


register(DatasetEntry("ag_news", "labeled", "classification/ag_news/test.csv", "fancyzhx/ag_news",
                      _ag_news_local, _ag_news_hub, "AG News topics (4 classes)", _AG_NEWS))


def _amazon_local(field_name: str):
    def load(p: Path):
        for r in _jsonl(p):
            yield LabeledExample(f"{r['title']}. {r['text']}", r[field_name])
    return load


def _amazon_hub(field_name: str):
    def load():
        # SAEBench's set: McAuley reviews with 1 and 5 stars; category <-> domain, rating <-> sentiment.
        for r in _hub("canrager/amazon_reviews_mcauley_1and5"):
            if field_name == "domain":
                yield LabeledExample(r["text"], r["category"])
            else:
                yield LabeledExample(r["text"], "positive" if float(r["rating"]) >= 4 else "negative")
    return load


register(DatasetEntry("amazon_domain", "labeled", "classification/amazon_multidomain_sentiment/reviews.jsonl",
                      "canrager/amazon_reviews_mcauley_1and5", _amazon_local("domain"), _amazon_hub("domain"),
                      "Amazon review product domain (4 classes)"))
register(DatasetEntry("amazon_sentiment", "labeled", "classification/amazon_multidomain_sentiment/reviews.jsonl",
                      "canrager/amazon_reviews_mcauley_1and5", _amazon_local("sentiment"), _amazon_hub("sentiment"),
                      "Amazon review sentiment (2 classes)"))


def _bbc_local(p: Path):
    for r in _jsonl(p):
        yield LabeledExample(r["text"], r["label_name"])


def _bbc_hub():
    for r in _hub("SetFit/bbc-news"):
        yield LabeledExample(r["text"], r["label_text"])


register(DatasetEntry("bbc_news", "labeled", "classification/bbc_news/bbc.jsonl", "SetFit/bbc-news",
                      _bbc_local, _bbc_hub, "BBC News topics (5 classes)"))

EUROPARL_LANGS = ["en", "fr", "de", "es", "nl"]  # SAEBench's subset


def _europarl_local(p: Path):
    with open(p, encoding="utf-8") as f:
        for line in f:
            lang, _, sentence = line.rstrip("\n").partition("\t")
            if lang in EUROPARL_LANGS and sentence:
                yield LabeledExample(sentence, lang)


def _europarl_hub():
    for other in EUROPARL_LANGS[1:]:
        pair = "-".join(sorted(["en", other]))
        for i, r in enumerate(_hub("Helsinki-NLP/europarl", pair)):
            if i >= 2000:
                break
            yield LabeledExample(r["translation"][other], other)
            if other == "fr":
                yield LabeledExample(r["translation"]["en"], "en")


register(DatasetEntry("europarl", "labeled", "classification/europarl_langid/europarl.test.tsv",
                      "Helsinki-NLP/europarl", _europarl_local, _europarl_hub,
                      "Europarl language ID (en, fr, de, es, nl)", EUROPARL_LANGS))

CODE_LANGS = ["Python", "Java", "JavaScript", "Go", "C", "Rust", "C++"]
_CODE_CHUNK_LINES = 20


def _code_chunks(text: str) -> Iterator[str]:
    """Long source files are split into chunks of 20 lines so each language gives enough examples."""
    lines = text.splitlines()
    for i in range(0, len(lines), _CODE_CHUNK_LINES):
        chunk = "\n".join(lines[i:i + _CODE_CHUNK_LINES]).strip()
        if len(chunk) >= 80:
            yield chunk


def _code_local(p: Path):
    for r in _jsonl(p):
        if r["language"] in CODE_LANGS:
            for chunk in _code_chunks(r["text"]):
                yield LabeledExample(chunk, r["language"])


def _code_hub():
    for r in _hub("codeparrot/github-code"):
        if r["language"] in CODE_LANGS:
            for chunk in _code_chunks(r["code"]):
                yield LabeledExample(chunk, r["language"])


register(DatasetEntry("code_langid", "labeled", "classification/code_langid/code.jsonl", "codeparrot/github-code",
                      _code_local, _code_hub, "Programming language of 20-line code chunks (7 classes)", CODE_LANGS))


# ---- MMLU ---------------------------------------------------------------------------------------

def _mmlu_local(p: Path):
    yield from _jsonl(p)


def _mmlu_hub():
    for r in _hub("cais/mmlu", "all", split="test"):
        yield {"subject": r["subject"], "question": r["question"], "choices": r["choices"], "answer": r["answer"]}


register(DatasetEntry("mmlu", "mmlu", "mmlu/test.jsonl", "cais/mmlu", _mmlu_local, _mmlu_hub,
                      "MMLU test questions with subjects (57 subjects)"))


# ---- a user's labeled file (no code needed: declared in a task file, see evals/registry.py) -------

LABELED_FILE_SUFFIXES = (".jsonl", ".csv", ".tsv")


def _labeled_file_loader(text_field: str, label_field: str):
    def load(p: Path):
        with open(p, encoding="utf-8", newline="") as f:
            if p.suffix == ".jsonl":
                rows = ((i, line) for i, line in enumerate(f, 1) if line.strip())
            else:
                rows = enumerate(csv.DictReader(f, delimiter="\t" if p.suffix == ".tsv" else ","), 2)
            for line, r in rows:
                try:
                    r = json.loads(r) if isinstance(r, str) else r
                except json.JSONDecodeError as err:
                    raise UserError(f"{p}, line {line}: not JSON ({err.msg})") from err
                if not isinstance(r, dict) or r.get(text_field) is None or r.get(label_field) is None:
                    raise UserError(f"{p}, line {line}: needs fields {text_field!r} and {label_field!r}")
                yield LabeledExample(str(r[text_field]), str(r[label_field]))
    return load


def _no_hub():
    raise UserError("a local labeled file has no hub copy")
    yield  # pragma: no cover - makes this a generator like the other hub loaders


def labeled_file_entry(name: str, path: str | Path, text_field: str = "text", label_field: str = "label",
                       declared_in: str = "") -> DatasetEntry:
    """A labeled probing set read from a local JSONL (one object per line), CSV or TSV file (a header
    row) with a text and a label field, as a task file declares it. Not registered anywhere: the task
    registry keeps it (`TaskRegistry.datasets`) and a run makes it known (`declared`). A built-in
    dataset's name is refused."""
    path = Path(path).expanduser().resolve()
    where = f" (declared in {declared_in})" if declared_in else ""
    if path.suffix not in LABELED_FILE_SUFFIXES:
        raise UserError(f"dataset {name}{where}: {path.name} must end in {', '.join(LABELED_FILE_SUFFIXES)}")
    if not path.is_file():
        raise UserError(f"dataset {name}{where}: {path} not found")
    signature = f"labeled file {path} (text: {text_field}, label: {label_field})"
    description = signature + where
    if name in REGISTRY:
        raise UserError(f"dataset {name!r}{where} is already defined: {REGISTRY[name].description or 'built-in'}")
    return DatasetEntry(name, "labeled", str(path), "", _labeled_file_loader(text_field, label_field), _no_hub,
                        description, path=path)


def labeled_examples(name: str, data_dir_override=None) -> list[LabeledExample]:
    entry = get_entry(name)
    if entry.kind != "labeled":
        raise UserError(f"dataset {name} is not a labeled classification set")
    return list(iterate(name, data_dir_override))

"""Labeled classification sets (text, label): the built-in ones (AG News, Amazon reviews, BBC News,
Europarl, code) and a user's labeled file that a task file declares."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

from ...settings import UserError
from .registry import REGISTRY, DatasetEntry, LabeledExample, get_entry, hub_dataset, iterate, read_jsonl, register

_AG_NEWS = ["World", "Sports", "Business", "Sci/Tech"]


def _ag_news_local(p: Path):
    with open(p, encoding="utf-8") as f:
        for row in csv.DictReader(f):
            yield LabeledExample(f"{row['title']}. {row['description']}", _AG_NEWS[int(row["label"]) - 1])


def _ag_news_hub():
    for r in hub_dataset("fancyzhx/ag_news", split="test"):
        yield LabeledExample(r["text"], _AG_NEWS[int(r["label"])])


register(DatasetEntry("ag_news", "labeled", "classification/ag_news/test.csv", "fancyzhx/ag_news",
                      _ag_news_local, _ag_news_hub, "AG News topics (4 classes)", _AG_NEWS))


def _amazon_local(field_name: str):
    def load(p: Path):
        for r in read_jsonl(p):
            yield LabeledExample(f"{r['title']}. {r['text']}", r[field_name])
    return load


def _amazon_hub(field_name: str):
    def load():
        # SAEBench's set: McAuley reviews with 1 and 5 stars; category <-> domain, rating <-> sentiment.
        for r in hub_dataset("canrager/amazon_reviews_mcauley_1and5"):
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
    for r in read_jsonl(p):
        yield LabeledExample(r["text"], r["label_name"])


def _bbc_hub():
    for r in hub_dataset("SetFit/bbc-news"):
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
        for i, r in enumerate(hub_dataset("Helsinki-NLP/europarl", pair)):
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
    for r in read_jsonl(p):
        if r["language"] in CODE_LANGS:
            for chunk in _code_chunks(r["text"]):
                yield LabeledExample(chunk, r["language"])


def _code_hub():
    for r in hub_dataset("codeparrot/github-code"):
        if r["language"] in CODE_LANGS:
            for chunk in _code_chunks(r["code"]):
                yield LabeledExample(chunk, r["language"])


register(DatasetEntry("code_langid", "labeled", "classification/code_langid/code.jsonl", "codeparrot/github-code",
                      _code_local, _code_hub, "Programming language of 20-line code chunks (7 classes)", CODE_LANGS))


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

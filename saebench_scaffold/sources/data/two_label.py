"""SAEBench's two spurious-correlation sets (its SCR data, `sae_bench/sae_bench_utils/dataset_info.py`):
texts labelled twice, in the hub's own train / test splits and row order.

  - `bias_in_bios`: `LabHC/bias_in_bios` (SAEBench names it `LabHC/bias_in_bios_class_set1`), columns
    `hard_text`, `profession` (0-27, `dataset_info.profession_dict`), `gender` (0 male, 1 female);
  - `amazon_reviews_mcauley`: `canrager/amazon_reviews_mcauley_1and5`, columns `text`, `category`
    (ids of `dataset_info.amazon_category_dict`), `rating` (1.0 or 5.0).

Layout in the data directory: one folder per set holding its two splits as the `datasets` library
saves them, `train` and `test`, each `.parquet` (`Dataset.to_parquet`) or `.jsonl` (`Dataset.to_json`),
rows in the hub's order (SAEBench takes the first rows of each label cell):

    classification/bias_in_bios/{train,test}.parquet
    classification/amazon_reviews_mcauley_1and5/{train,test}.parquet

Labels are read as SAEBench names them: professions and categories by name ("professor", "Books"),
gender "male" / "female", rating "1.0" / "5.0" (ids or names are both accepted in the files).
Without a data directory the hub copy is read; offline and without either, one error line says where
the files go (`registry.resolve_source`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ...settings import UserError, data_dir
from .registry import DatasetEntry, get_entry, hub_dataset, hub_offline_reason, iterate, read_jsonl, register

SPLITS = ("train", "test")
SUFFIXES = (".parquet", ".jsonl")

# dataset_info.profession_dict, in id order
PROFESSIONS = ("accountant", "architect", "attorney", "chiropractor", "comedian", "composer", "dentist", "dietitian", "dj",
               "filmmaker", "interior_designer", "journalist", "model", "nurse", "painter", "paralegal", "pastor",
               "personal_trainer", "photographer", "physician", "poet", "professor", "psychologist", "rapper",
               "software_engineer", "surgeon", "teacher", "yoga_teacher")
GENDERS = ("male", "female")  # dataset_info.gender_dict
# dataset_info.amazon_category_dict, in id order
AMAZON_CATEGORIES = ("All_Beauty", "Toys_and_Games", "Cell_Phones_and_Accessories", "Industrial_and_Scientific",
                     "Gift_Cards", "Musical_Instruments", "Electronics", "Handmade_Products", "Arts_Crafts_and_Sewing",
                     "Baby_Products", "Health_and_Household", "Office_Products", "Digital_Music",
                     "Grocery_and_Gourmet_Food", "Sports_and_Outdoors", "Home_and_Kitchen", "Subscription_Boxes",
                     "Tools_and_Home_Improvement", "Pet_Supplies", "Video_Games", "Kindle_Store",
                     "Clothing_Shoes_and_Jewelry", "Patio_Lawn_and_Garden", "Unknown", "Books", "Automotive",
                     "CDs_and_Vinyl", "Beauty_and_Personal_Care", "Amazon_Fashion", "Magazine_Subscriptions", "Software",
                     "Health_and_Personal_Care", "Appliances", "Movies_and_TV")


@dataclass(frozen=True)
class TwoLabelRow:
    split: str  # "train" | "test"
    text: str
    column1: str  # profession / category name
    column2: str  # gender / rating


@dataclass(frozen=True)
class TwoLabelSet:
    name: str  # registry name
    hub_name: str  # what `load_dataset` reads
    folder: str  # in the data directory
    text_column: str
    column1_name: str
    column2_name: str
    column1_names: tuple[str, ...]  # id -> name
    description: str

    def column1(self, value) -> str:
        return _by_id(value, self.column1_names, self, self.column1_name)

    def column2(self, value) -> str:
        if self.column2_name == "gender":
            return _by_id(value, GENDERS, self, "gender")
        return str(float(value))  # rating: "1.0" / "5.0", as SAEBench's (1.0, 5.0)


def _by_id(value, names: tuple[str, ...], s: TwoLabelSet, column: str) -> str:
    if isinstance(value, str) and not value.lstrip("-").isdigit():
        return value
    try:
        return names[int(value)]
    except (IndexError, ValueError, TypeError):
        raise UserError(f"dataset {s.name}: {column} {value!r} is neither a name nor an id of SAEBench's "
                        f"{s.hub_name} labels") from None


BIAS_IN_BIOS = TwoLabelSet("bias_in_bios", "LabHC/bias_in_bios", "classification/bias_in_bios", "hard_text", "profession",
                           "gender", PROFESSIONS, "Bias in Bios: biographies, profession × gender (SAEBench's SCR set)")
AMAZON_MCAULEY = TwoLabelSet("amazon_reviews_mcauley", "canrager/amazon_reviews_mcauley_1and5",
                             "classification/amazon_reviews_mcauley_1and5", "text", "category", "rating",
                             AMAZON_CATEGORIES, "Amazon reviews (McAuley 2023), 1 and 5 stars: category × rating "
                             "(SAEBench's SCR set)")
TWO_LABEL_SETS = {s.name: s for s in (BIAS_IN_BIOS, AMAZON_MCAULEY)}


def split_file(folder: Path, split: str) -> Path | None:
    for suffix in SUFFIXES:
        if (folder / f"{split}{suffix}").is_file():
            return folder / f"{split}{suffix}"
    return None


def _records(path: Path, columns: list[str]) -> Iterator[dict]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path, columns=columns)
        for batch in table.to_batches(max_chunksize=65536):
            yield from batch.to_pylist()
    else:
        try:
            yield from read_jsonl(path)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}: not JSON lines ({err.msg}, line {err.lineno})") from err


def _local(s: TwoLabelSet):
    def load(folder: Path) -> Iterator[TwoLabelRow]:
        for split in SPLITS:
            path = split_file(folder, split)
            if path is None:
                raise UserError(f"dataset {s.name}: {folder}/{split}.parquet (or .jsonl) not found; save {s.hub_name}'s "
                                f"{split} split there (README 'SAEBench's SCR data')")
            columns = [s.text_column, s.column1_name, s.column2_name]
            for i, r in enumerate(_records(path, columns)):
                if any(r.get(c) is None for c in columns):
                    raise UserError(f"{path}, row {i}: needs columns {', '.join(columns)}")
                yield TwoLabelRow(split, r[s.text_column], s.column1(r[s.column1_name]), s.column2(r[s.column2_name]))
    return load


def _hub(s: TwoLabelSet):
    def load() -> Iterator[TwoLabelRow]:
        for split in SPLITS:
            # downloaded once into the hub cache (as SAEBench's `load_dataset`), not streamed on every run
            for r in hub_dataset(s.hub_name, split=split, streaming=False):
                yield TwoLabelRow(split, r[s.text_column], s.column1(r[s.column1_name]), s.column2(r[s.column2_name]))
    return load


for _s in TWO_LABEL_SETS.values():
    register(DatasetEntry(_s.name, "two_label", _s.folder, _s.hub_name, _local(_s), _hub(_s), _s.description))


def two_label_rows(name: str, data_dir_override=None) -> Iterator[TwoLabelRow]:
    """The rows of one of SAEBench's two-label sets, train split then test split, in file order."""
    if get_entry(name).kind != "two_label":
        raise UserError(f"dataset {name} is not one of SAEBench's two-label sets ({', '.join(TWO_LABEL_SETS)})")
    return iterate(name, data_dir_override)


def two_label_available(name: str, data_dir_override=None) -> bool:
    """Whether `name` can be read: its folder in the data directory holds both splits, or (no data
    directory) the hub answers."""
    s = TWO_LABEL_SETS[name]
    root = data_dir(data_dir_override)
    if root is not None:
        return all(split_file(root / s.folder, split) is not None for split in SPLITS)
    return hub_offline_reason() is None

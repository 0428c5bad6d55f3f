"""MMLU subject -> category (stem, humanities, social_sciences, other), as lm-evaluation-harness
groups its `mmlu` task: read from the installed package's `lm_eval/tasks/mmlu/default/mmlu_*.yaml`
files (`dataset_name` = subject, `tag` = `mmlu_<category>_tasks`), with a built-in copy of the same
table when lm-eval is not installed or its files cannot be read (STEM 19, humanities 13, social
sciences 12, other 13 subjects)."""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

CATEGORIES = ("stem", "humanities", "social_sciences", "other")

FALLBACK: dict[str, tuple[str, ...]] = {
    "stem": ("abstract_algebra", "anatomy", "astronomy", "college_biology", "college_chemistry",
             "college_computer_science", "college_mathematics", "college_physics", "computer_security",
             "conceptual_physics", "electrical_engineering", "elementary_mathematics", "high_school_biology",
             "high_school_chemistry", "high_school_computer_science", "high_school_mathematics",
             "high_school_physics", "high_school_statistics", "machine_learning"),
    "humanities": ("formal_logic", "high_school_european_history", "high_school_us_history",
                   "high_school_world_history", "international_law", "jurisprudence", "logical_fallacies",
                   "moral_disputes", "moral_scenarios", "philosophy", "prehistory", "professional_law",
                   "world_religions"),
    "social_sciences": ("econometrics", "high_school_geography", "high_school_government_and_politics",
                        "high_school_macroeconomics", "high_school_microeconomics", "high_school_psychology",
                        "human_sexuality", "professional_psychology", "public_relations", "security_studies",
                        "sociology", "us_foreign_policy"),
    "other": ("business_ethics", "clinical_knowledge", "college_medicine", "global_facts", "human_aging",
              "management", "marketing", "medical_genetics", "miscellaneous", "nutrition",
              "professional_accounting", "professional_medicine", "virology"),
}


def _fallback() -> dict[str, str]:
    return {s: c for c, subjects in FALLBACK.items() for s in subjects}


def lm_eval_mapping() -> dict[str, str] | None:
    """The mapping read from the installed lm-eval task files, or None if unavailable."""
    spec = importlib.util.find_spec("lm_eval")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "tasks" / "mmlu" / "default"
    if not folder.is_dir():
        return None
    import yaml

    out = {}
    try:
        for path in sorted(folder.glob("mmlu_*.yaml")):
            doc = yaml.safe_load(path.read_text()) or {}
            tag, subject = doc.get("tag"), doc.get("dataset_name")
            if not (isinstance(tag, str) and subject and tag.startswith("mmlu_") and tag.endswith("_tasks")):
                continue
            category = tag[len("mmlu_"):-len("_tasks")]
            if category in CATEGORIES:
                out[subject] = category
    except (OSError, yaml.YAMLError):
        return None
    return out if len(out) == 57 else None


@lru_cache(maxsize=1)
def subject_categories() -> tuple[dict[str, str], str]:
    """(subject -> category, source) — lm-eval's files when installed, else the built-in table."""
    got = lm_eval_mapping()
    if got is not None:
        return got, "lm_eval/tasks/mmlu/default (installed lm-eval)"
    return _fallback(), "built-in table (copy of lm-eval's mapping)"


def category_of(subject: str) -> str:
    return subject_categories()[0][subject]

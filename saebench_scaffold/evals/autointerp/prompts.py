"""The judge's two conversations and how its answers are read: SAEBench 0.6.0's prompts, answer
parsing and score (`AutoInterp.get_generation_prompts`, `get_scoring_prompts`, `parse_explanation`,
`parse_predictions`, `score_predictions` in `sae_bench/evals/autointerp/main.py`), word for word.

Beyond SAEBench: an answer that is a refusal is named as one (SAEBench parses it as an explanation,
or drops the latent silently when it cannot read a prediction).
"""

from __future__ import annotations

import random
import re

from .examples import Example

Messages = list[dict[str, str]]

GENERATION_SYSTEM = (
    "We're studying neurons in a neural network. Each neuron activates on some particular word/words/substring/concept "
    "in a short document. The activating words in each document are indicated with << ... >>. We will give you a list "
    "of documents on which the neuron activates, in order from most strongly activating to least strongly activating. "
    "Look at the parts of the document the neuron activates for and summarize in a single sentence what the neuron is "
    "activating on. Try not to be overly specific in your explanation. Note that some neurons will activate only on "
    "specific words or substrings, but others will activate on most/all words in a sentence provided that sentence "
    "contains some particular concept. Your explanation should cover most or all activating words (for example, don't "
    "give an explanation which is specific to a single word if all words in a sentence cause the neuron to activate). "
    "Pay attention to things like the capitalization and punctuation of the activating words or concepts, if that "
    "seems relevant. Keep the explanation as short and simple as possible, limited to 20 words or less. Omit "
    "punctuation and formatting. You should avoid giving long lists of words."
)
GENERATION_DEMOS = (
    " Some examples: \"This neuron activates on the word 'knows' in rhetorical questions\", and \"This neuron activates "
    "on verbs related to decision-making and preferences\", and \"This neuron activates on the substring 'Ent' at the "
    "start of words\", and \"This neuron activates on text about government economic policy\"."
)
# SAEBench appends this without a space after the last sentence; kept as is.
GENERATION_FORM = "Your response should be in the form \"This neuron activates on...\"."
SCORING_SYSTEM = (
    "We're studying neurons in a neural network. Each neuron activates on some particular word/words/substring/concept "
    "in a short document. You will be given a short explanation of what this neuron activates for, and then be shown "
    "{n} example sequences in random order. You will have to return a comma-separated list of the examples where you "
    "think the neuron should activate at least once, on ANY of the words or substrings in the document. For example, "
    "your response might look like \"{example}\". Try not to be overly specific in your interpretation of the "
    "explanation. If you think there are no examples where the neuron will activate, you should just respond with "
    "\"None\". You should include nothing else in your response other than comma-separated numbers or the word "
    "\"None\" - this is important."
)
EXPLANATION_LEAD = "activates on"  # what the demos put before the explanation proper

REFUSAL = re.compile(r"^\W*(i'?m sorry|i am sorry|sorry\b|i can(?:no|')t\b|i cannot\b|i'?m (?:not able|unable)|"
                     r"i am (?:not able|unable)|as an ai\b|i won'?t\b|i will not\b)", re.IGNORECASE)


def numbered(examples: list[Example], mark_toks: bool) -> str:
    return "\n".join(f"{i + 1}. {ex.to_str(mark_toks=mark_toks)}" for i, ex in enumerate(examples))


def generation_messages(examples: list[Example], use_demos: bool = True) -> Messages:
    """The explanation request: the highlighted examples, strongest first."""
    if not examples:
        raise ValueError("no generation examples")
    system = GENERATION_SYSTEM + (GENERATION_DEMOS if use_demos else GENERATION_FORM)
    return [{"role": "system", "content": system},
            {"role": "user", "content": f"The activating documents are given below:\n\n{numbered(examples, True)}"}]


def example_answer(rng: random.Random, n_examples: int, n_correct: int) -> str:
    """The sample answer the scoring prompt shows: n_correct of 1..n_examples, sorted."""
    return ", ".join(str(i) for i in sorted(rng.sample(range(1, 1 + n_examples), k=n_correct)))


def scoring_messages(explanation: str, examples: list[Example], n_examples: int, sample_answer: str) -> Messages:
    """The detection request: the explanation and the unhighlighted examples in shuffled order.
    `n_examples` is SAEBench's configured count (which it states even if fewer examples follow)."""
    if not examples:
        raise ValueError("no scoring examples")
    system = SCORING_SYSTEM.format(n=n_examples, example=sample_answer)
    user = (f"Here is the explanation: this neuron fires on {explanation}.\n\n"
            f"Here are the examples:\n\n{numbered(examples, False)}")
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def parse_explanation(answer: str) -> str:
    """The explanation proper: after the last "activates on", without a final full stop."""
    return answer.split(EXPLANATION_LEAD)[-1].rstrip(".").strip()


def parse_predictions(answer: str) -> list[int] | None:
    """Example numbers from "2, 5 and 9" or "None" ([]); None when the answer is anything else."""
    parts = answer.strip().rstrip(".").replace("and", ",").replace("None", "").split(",")
    items = [p.strip() for p in parts if p.strip() != ""]
    if not all(p.isdigit() for p in items):
        return None
    try:
        return [int(p) for p in items]
    except ValueError:  # digits int() does not read ("²"): SAEBench crashes there
        return None


def score_predictions(predictions: list[int], examples: list[Example]) -> float:
    """Fraction of the examples classified correctly (predicted active exactly when active)."""
    predicted = [i in predictions for i in range(1, len(examples) + 1)]
    return sum(p == ex.is_active for p, ex in zip(predicted, examples)) / len(examples)


def is_refusal(answer: str) -> bool:
    return bool(REFUSAL.match(answer))

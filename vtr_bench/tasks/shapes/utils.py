"""lmms-eval hooks of the shapes tasks: visuals, prompt text and exact-match scoring per question type."""

from __future__ import annotations

from PIL import Image

from vtr_bench.tiny.data import QUESTION_TYPES


def doc_to_visual(doc: dict) -> list[Image.Image]:
    """Return the sample's image as a one-element list of RGB PIL images."""
    return [doc["image"].convert("RGB")]


def doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    """Return the raw question; the model wrapper applies its own prompt template."""
    return doc["question"]


def normalize_answer(text: str) -> str:
    """Lower-case, drop an end-of-sequence marker and surrounding whitespace and punctuation."""
    return text.replace("</s>", " ").strip().strip(".,!?:;").strip().lower()


def scorer(question_types: tuple[str, ...]):
    """The ``process_results`` hook of a benchmark with these question types."""

    def process_results(doc: dict, results: list[str]) -> dict:
        """Score one prediction: ``exact_match`` plus ``exact_match_<type>`` for the doc's type (None for the
        others)."""
        score = float(normalize_answer(results[0]) == doc["answer"])
        out: dict = {f"exact_match_{t}": ({"score": score} if t == doc["qtype"] else None) for t in question_types}
        out["exact_match"] = score  # inserted last: lmms-eval reports the last metric's item count as "samples"
        return out

    return process_results


process_results = scorer(QUESTION_TYPES)


def mean_of_present(items: list) -> float:
    """Mean score over the docs of one question type (items of other types are None); NaN if there are none."""
    scores = [it["score"] for it in items if it is not None]
    return sum(scores) / len(scores) if scores else float("nan")

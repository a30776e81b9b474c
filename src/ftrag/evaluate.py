"""Metrics shared by every lab, so that numbers from different systems are comparable by construction.

A *reply* is the raw text a system generated. It is parsed as the course's JSON answer schema
(see :mod:`ftrag.prompts`); the metrics below work on the parsed form and fall back to the raw text
where the model did not produce valid JSON (a base model often answers correctly in prose).
"""
from __future__ import annotations

import json
import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .prompts import ANSWER_KEYS, SIGN_OFF

# --------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class ParsedReply:
    """A reply split into the schema's fields. ``valid`` is true only for a schema-exact object."""

    raw: str
    valid: bool
    answer: str
    sources: tuple[str, ...] = ()
    needs_human: bool | None = None
    problem: str = ""


def parse_reply(raw: str) -> ParsedReply:
    """Parse one reply. Valid means: the whole reply (whitespace aside) is one JSON object with
    exactly the keys ``answer`` (string), ``sources`` (list of strings), ``needs_human`` (bool)."""
    text = raw.strip()
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        return ParsedReply(raw, False, text, problem=f"not JSON ({exc.msg})")
    if not isinstance(obj, dict):
        return ParsedReply(raw, False, text, problem="JSON but not an object")
    answer = obj.get("answer")
    answer_text = answer if isinstance(answer, str) else text
    sources = obj.get("sources")
    source_ids = tuple(s for s in sources if isinstance(s, str)) if isinstance(sources, list) else ()
    needs_human = obj.get("needs_human") if isinstance(obj.get("needs_human"), bool) else None
    problem = ""
    if set(obj) != set(ANSWER_KEYS):
        problem = f"keys {sorted(obj)} instead of {list(ANSWER_KEYS)}"
    elif not isinstance(answer, str):
        problem = "answer is not a string"
    elif not isinstance(sources, list) or len(source_ids) != len(sources):
        problem = "sources is not a list of strings"
    elif needs_human is None:
        problem = "needs_human is not true/false"
    return ParsedReply(raw, not problem, answer_text, source_ids, needs_human, problem)


# --------------------------------------------------------------------------- answer matching

_NON_WORD = re.compile(r"[^a-z0-9.$%]+")


def normalize(text: str) -> str:
    """Lower-case, unify quotes/dashes, drop punctuation except ``. $ %`` inside tokens, squeeze
    spaces. ``"$12.50/month"`` and ``"$12.50 per month"`` both contain ``"$12.50"``."""
    text = text.lower().replace("\u2019", "'").replace("\u2013", "-").replace("\u2014", "-")
    text = text.replace(",", "")  # 1,000 == 1000
    text = _NON_WORD.sub(" ", text)
    # a full stop that ends a sentence is punctuation, one between digits is a decimal point
    text = re.sub(r"\.(?!\d)|(?<!\d)\.", " ", text)
    return " ".join(text.split())


def matches(answer: str, accepted: Iterable[str]) -> bool:
    """True when any accepted variant appears in the answer as whole words (after normalising)."""
    hay = f" {normalize(answer)} "
    return any(f" {normalize(variant)} " in hay for variant in accepted if normalize(variant))


# --------------------------------------------------------------------------- brand voice

DISCLAIMERS = (
    "as an ai", "language model", "i am an ai", "i'm an ai", "i cannot browse", "my training data",
    "i do not have access", "i don't have access",
)
MAX_ANSWER_WORDS = 60


def voice_checks(answer: str) -> dict[str, bool]:
    """The measurable proxy for Lumio's brand voice, one boolean per rule:

    * ``concise``: at most 60 words;
    * ``second_person``: speaks to the customer (uses *you* or *your*);
    * ``no_disclaimer``: no AI disclaimers or talk about training data;
    * ``sign_off``: ends with the brand sign-off "Stay bright!".
    """
    words = answer.split()
    lowered = answer.lower()
    return {
        "concise": 0 < len(words) <= MAX_ANSWER_WORDS,
        "second_person": bool(re.search(r"\byou(r|rs|'re|'ll)?\b", lowered)),
        "no_disclaimer": not any(d in lowered for d in DISCLAIMERS),
        "sign_off": answer.rstrip().endswith(SIGN_OFF),
    }


def voice_score(answer: str) -> float:
    """Share of the voice rules an answer follows (0..1)."""
    checks = voice_checks(answer)
    return sum(checks.values()) / len(checks)


# --------------------------------------------------------------------------- aggregation


HANDOFF_PATTERN = re.compile(
    r"don'?t have (that|this|the|any|enough) (information|info|details)|do not have (that|this|the|any) "
    r"(information|info|details)|not sure|can'?t find|cannot find|no information|not in the context|"
    r"teammate|human agent|support team will|pass(ing)? you to|hand(ing)? (you )?over|contact (our )?support",
    re.IGNORECASE)


def says_handoff(text: str) -> bool:
    """The text declines or passes the customer on ("I don't have that information, so I'm passing
    you to a teammate"), whatever the ``needs_human`` flag says."""
    return bool(HANDOFF_PATTERN.search(text))


def mean(values: Sequence[float]) -> float:
    return float(statistics.fmean(values)) if values else float("nan")


def bootstrap_ci(values: Sequence[float], *, n_resamples: int = 2000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean over questions (deterministic seed)."""
    import random

    if not values:
        return (float("nan"), float("nan"))
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(n_resamples))
    lo = means[int((1 - level) / 2 * n_resamples)]
    hi = means[min(n_resamples - 1, int((1 + level) / 2 * n_resamples))]
    return (float(lo), float(hi))


@dataclass
class Timing:
    """Latencies in seconds, summarised the way the labs report them."""

    seconds: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return float(statistics.median(self.seconds)) if self.seconds else float("nan")


def evenly_spaced(items: Sequence[Any], limit: int | None) -> list[Any]:
    """At most ``limit`` items, spread evenly from the first to the last (all of them for ``None``)."""
    items = list(items)
    if not limit or limit >= len(items):
        return items
    if limit == 1:
        return items[:1]
    return [items[round(i * (len(items) - 1) / (limit - 1))] for i in range(limit)]

"""Metrics shared by every lab, so that numbers from different systems are comparable by construction.

A *reply* is the raw text a system generated. It is parsed as the course's JSON answer schema
(see :mod:`ftrag.prompts`); the metrics below work on the parsed form and fall back to the raw text
where the model did not produce valid JSON (a base model often answers correctly in prose).
"""
from __future__ import annotations

import json
import math
import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
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
    """True when any accepted variant appears in the answer as whole words (after normalising), or
    the answer states one of the values the variants state (:func:`typed_values`: "21 days" states
    the "21-day" of a gold answer, "a 5-year warranty" the "5 years"). This is *mentions*, not
    *correct*: see :func:`is_correct`."""
    accepted = list(accepted)
    hay = f" {normalize(answer)} "
    if any(f" {normalize(variant)} " in hay for variant in accepted if normalize(variant)):
        return True
    gold = set().union(*(typed_values(variant) for variant in accepted))
    return bool(gold & typed_values(answer))


# A value that a question can have two of: a sum of money, a percentage, or a number with its unit
# ("30 days", "5-8 business days", "14-day"). A number glued to letters ("E21", "GU10", "CR2032") is
# a name, not a value, and is left alone.
_NUMBER = r"\d[\d,]*(?:\.\d+)?"
_MONEY = re.compile(rf"([$€£])\s?({_NUMBER})")
_PERCENT = re.compile(rf"(?<![\w.])({_NUMBER})\s?%")
_QUANTITY = re.compile(
    rf"(?<![\w$€£.,:+-])({_NUMBER}(?:\s?(?:–|-|to)\s?{_NUMBER})?)(?:\s|-)(?!%)([a-z]+)", re.IGNORECASE)
_RANGE_SEP = re.compile(r"\s?(?:–|-|to)\s?")


def _unit(word: str) -> str:
    word = word.lower()
    return word[:-1] if word.endswith("s") and not word.endswith("ss") and len(word) > 3 else word


def typed_values(text: str) -> set[tuple[str, str]]:
    """The values a text states, as ``(kind, value)``: ``("money", "$4.99")``, ``("percent", "40")``,
    ``("day", "30")``, ``("business", "5-8")`` (a quantity's kind is its unit, singular)."""
    out: set[tuple[str, str]] = set()
    for symbol, number in _MONEY.findall(text):
        out.add(("money", symbol + number.replace(",", "").rstrip(".")))
    for number in _PERCENT.findall(text):
        out.add(("percent", number.replace(",", "")))
    for number, unit in _QUANTITY.findall(text):
        out.add((_unit(unit), _RANGE_SEP.sub("-", number.replace(",", ""))))
    return out


def conflicting_values(answer: str, accepted: Iterable[str]) -> set[tuple[str, str]]:
    """Values in the answer of a kind the gold answer has, that no accepted variant states: a second
    price for a price question, "14 days" next to a gold "30 days"."""
    gold: set[tuple[str, str]] = set()
    for variant in accepted:
        gold |= typed_values(variant)
    kinds = {kind for kind, _ in gold}
    return {(kind, value) for kind, value in typed_values(answer) if kind in kinds and (kind, value) not in gold}


def is_correct(answer: str, accepted: Sequence[str]) -> bool:
    """Correct: the answer states an accepted gold value and no conflicting value of the same kind
    (:func:`conflicting_values`). "$149 ... priced at $59" for a $149 question is wrong."""
    accepted = list(accepted)
    return matches(answer, accepted) and not conflicting_values(answer, accepted)


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


def is_handoff(reply: ParsedReply) -> bool:
    """The one hand-off rule for every system: the reply sets ``needs_human`` to true, or its answer
    text passes the customer on (what the customer reads counts, valid JSON or not)."""
    return reply.needs_human is True or says_handoff(reply.answer)


def mean(values: Sequence[float]) -> float:
    return float(statistics.fmean(values)) if values else float("nan")


def bootstrap_ci(values: Sequence[float], *, n_resamples: int = 2000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean over questions (deterministic seed), for
    means that are not proportions (latency, tokens). For 0/1 outcomes use :func:`wilson_ci`: the
    bootstrap of 0 out of 24 is [0, 0], a certainty that 24 questions cannot give."""
    import random

    if not values:
        return (float("nan"), float("nan"))
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(n_resamples))
    lo = means[int((1 - level) / 2 * n_resamples)]
    hi = means[min(n_resamples - 1, int((1 + level) / 2 * n_resamples))]
    return (float(lo), float(hi))


def wilson_ci(outcomes: Sequence[float], *, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a proportion from 0/1 outcomes. Unlike the bootstrap it is
    never zero-width: 0 of 24 gives [0, 0.14]."""
    if any(o not in (0, 1) for o in outcomes):
        raise ValueError("wilson_ci takes 0/1 outcomes (a proportion); for other means use a bootstrap")
    return wilson_interval(int(sum(outcomes)), len(outcomes), z=z)


def wilson_interval(successes: int, n: int, *, z: float = 1.959964) -> tuple[float, float]:
    """:func:`wilson_ci` from counts: ``successes`` out of ``n``."""
    if not n:
        return (float("nan"), float("nan"))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True)
class PairedTest:
    """McNemar's exact test on paired 0/1 outcomes of two systems over the same questions.
    ``a_only`` / ``b_only``: questions only A / only B got right; ``p_value`` is two-sided."""

    a_only: int
    b_only: int
    p_value: float

    @property
    def significant(self) -> bool:
        return self.p_value < 0.05

    @property
    def outcome(self) -> str:
        """A's place against B in words a sentence can quote whatever the run measured: ``"ahead of"``,
        ``"behind"``, or ``"not separated from"`` when p >= 0.05."""
        if not self.significant or self.a_only == self.b_only:
            return "not separated from"
        return "ahead of" if self.a_only > self.b_only else "behind"

    def __str__(self) -> str:
        return f"{self.a_only} vs {self.b_only} discordant questions, McNemar p = {self.p_value:.3g}"


def mcnemar(a: Sequence[float], b: Sequence[float]) -> PairedTest:
    """Exact two-sided McNemar test: under "no difference" each discordant question is a fair coin."""
    if len(a) != len(b):
        raise ValueError(f"paired outcomes need the same questions ({len(a)} vs {len(b)})")
    a_only = sum(1 for x, y in zip(a, b) if x and not y)
    b_only = sum(1 for x, y in zip(a, b) if y and not x)
    n, k = a_only + b_only, min(a_only, b_only)
    p = 1.0 if n == 0 else min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)
    return PairedTest(a_only, b_only, p)


def evenly_spaced(items: Sequence[Any], limit: int | None) -> list[Any]:
    """At most ``limit`` items, spread evenly from the first to the last (all of them for ``None``)."""
    items = list(items)
    if not limit or limit >= len(items):
        return items
    if limit == 1:
        return items[:1]
    return [items[round(i * (len(items) - 1) / (limit - 1))] for i in range(limit)]

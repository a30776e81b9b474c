"""Few-shot prompting: the system prompt plus k worked examples of the reply the course wants.

The examples are behaviour-training chats (:attr:`ftrag.data.Course.finetune_train`): passages
about invented businesses, a question, and the ideal JSON reply in Lumio's voice. They never
mention Lumio, so a few-shot prompt teaches the same *form and behaviour* the adapter learns from
those chats, and no evaluation question or Lumio fact leaks into the prompt
(:func:`check_no_leak`). Answers and hand-offs alternate, so the model sees both decisions.
"""
from __future__ import annotations

import re
from collections.abc import Sequence

from .errors import CourseError

#: The reply kinds shown, in this rotation: an answer from the passages, then a hand-off.
ROTATION = ("grounded", "handoff")


def pick_examples(chats: Sequence, k: int) -> list:
    """``k`` training chats, alternating :data:`ROTATION` kinds, each kind in file order."""
    if k < 0:
        raise ValueError(f"k must be 0 or more, got {k}")
    by_kind = {kind: [c for c in chats if c.kind == kind] for kind in ROTATION}
    picked: list = []
    for i in range(k):
        pool = by_kind[ROTATION[i % len(ROTATION)]]
        position = i // len(ROTATION)
        if position >= len(pool):
            raise CourseError(f"only {len(pool)} {ROTATION[i % len(ROTATION)]!r} chats to show, {k} examples "
                              "asked: ask for fewer examples")
        picked.append(pool[position])
    return picked


def example_messages(chats: Sequence) -> tuple[dict[str, str], ...]:
    """The user and assistant turns of each chat (its system prompt dropped: the system prompt is
    sent once, before the examples), ready for :func:`ftrag.prompts.chat`'s ``examples``."""
    turns: list[dict[str, str]] = []
    for c in chats:
        turns += [dict(m) for m in c.messages if m["role"] in ("user", "assistant")]
    return tuple(turns)


#: A help-centre sentence this long or longer, found in an example, is a Lumio fact leaking into it.
MIN_FACT_WORDS = 6


def _normalise(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9$%.,:/-]+", " ", text.lower()).split())


def lumio_facts(course) -> set[str]:
    """Lumio's facts as sentences: every sentence of at least :data:`MIN_FACT_WORDS` words in the
    help-centre articles and their updates (what retrieval can put in a prompt), normalised."""
    sentences = set()
    for article in (*course.kb, *course.kb_updates):
        for sentence in re.split(r"(?<=[.!?])\s+|\n+", article.body):
            sentence = _normalise(sentence).rstrip(".")
            if len(sentence.split()) >= MIN_FACT_WORDS:
                sentences.add(sentence)
    return sentences


def leaks(chats: Sequence, course) -> list[str]:
    """What in the examples comes from the evaluation: any evaluation question (every split), the
    company's name, or a Lumio fact (:func:`lumio_facts`). A bare value such as "90 days" is not a
    fact: the invented businesses of the training chats have opening hours and prices too."""
    from .prompts import COMPANY

    questions = {_normalise(q.question) for q in (*course.knowledge, *course.unanswerable)}
    facts = lumio_facts(course)
    found = []
    for c in chats:
        text = _normalise(" ".join(m["content"] for m in c.messages if m["role"] != "system"))
        found += [f"{c.id}: evaluation question {q!r}" for q in questions if q in text]
        found += [f"{c.id}: Lumio fact {f!r}" for f in facts if f in text]
        if COMPANY.lower() in text:
            found.append(f"{c.id}: mentions {COMPANY}")
    return found


def check_no_leak(chats: Sequence, course) -> None:
    """Refuse examples that would show the model part of the evaluation."""
    found = leaks(chats, course)
    if found:
        raise CourseError("few-shot examples contain evaluation material (" + "; ".join(found[:5]) +
                          "): draw the examples from the behaviour training chats only")


def with_examples(conversation: Sequence[dict[str, str]], examples: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    """``conversation`` (system prompt first) with the few-shot ``examples`` inserted after the
    system prompt: the layout :func:`ftrag.prompts.chat` builds, for chats that already exist."""
    if not conversation or conversation[0]["role"] != "system":
        raise CourseError("a few-shot prompt needs a conversation that starts with the system prompt")
    return [dict(conversation[0]), *examples, *(dict(m) for m in conversation[1:])]

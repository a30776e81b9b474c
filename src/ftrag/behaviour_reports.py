"""Scoring what a model replies: behaviour (JSON schema, voice, hand-offs) and facts, and tables
that put several models side by side.

Used by the QLoRA and hybrid labs and by the hand-off benchmark; the single-reply rules they apply
are in :mod:`ftrag.evaluate`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .encoding import prompt_of
from .evaluate import evenly_spaced


def reply_text(generation: Any) -> str:
    """The text of a reply given as a string or a :class:`~ftrag.generation.Generation`."""
    return generation if isinstance(generation, str) else generation.text


def behaviour_format_prompts(course, profile) -> list[Any]:
    """The format prompts the behaviour evaluation asks (:func:`behaviour_prompt_sets`)."""
    return evenly_spaced(course.format_prompts, profile.eval_behaviour_limit)


def behaviour_prompt_sets(course, profile) -> dict[str, tuple[list[list[dict[str, str]]], list[bool | None]]]:
    """The prompts the QLoRA lab's behaviour evaluation asks, as ``{set name: (conversations,
    expected needs_human flags)}``: validation chats without their replies (a hand-off is expected
    where the chat's kind is ``handoff``) and the format prompts with their passages. At most
    ``profile.eval_behaviour_limit`` of each, evenly spaced through the file (None = all)."""
    from .prompts import chat

    val = evenly_spaced(course.finetune_val, profile.eval_behaviour_limit)
    fmt = behaviour_format_prompts(course, profile)
    return {"validation": ([prompt_of(e) for e in val], [e.kind == "handoff" for e in val]),
            "format": ([chat(f.question, f.passages) for f in fmt], [f.expect_needs_human for f in fmt])}


def behaviour_report(generations: Sequence[Any], expect_needs_human: Sequence[bool | None] | None = None
                     ) -> dict[str, Any]:
    """How well replies follow the trained behaviour.

    ``json_valid``: share of schema-exact JSON replies (``json_valid_ci``: its 95% Wilson interval over
    the ``n`` replies); ``voice``: mean voice score of the answer
    text (the raw reply where it is not JSON); ``voice_rules``: share of replies passing each rule;
    ``needs_human_accuracy``: share of replies whose ``needs_human`` equals the expected value
    (a missing or invalid flag counts as wrong), over the prompts where one is expected.
    ``handoff_reply_when_needed`` / ``..._when_not_needed``: share of replies whose *text* declines
    or passes the customer on (:func:`ftrag.evaluate.says_handoff`) among the prompts that call for
    a hand-off / that do not (the second is over-refusal: a bot that passes every question on is
    useless too); ``handoff_replies_flagged``: of the replies whose text hands off, the share that
    also set ``needs_human`` (without the flag nobody is told to take over).
    """
    from .evaluate import mean, parse_reply, says_handoff, voice_checks, wilson_ci

    parsed = [parse_reply(reply_text(g)) for g in generations]
    checks = [voice_checks(p.answer) for p in parsed]
    rules = list(checks[0]) if checks else []
    valid = [float(p.valid) for p in parsed]
    report: dict[str, Any] = {
        "n": len(parsed),
        "json_valid": mean(valid),
        "json_valid_ci": wilson_ci(valid),
        "voice": mean([sum(c.values()) / len(c) for c in checks]),
        "voice_rules": {r: mean([float(c[r]) for c in checks]) for r in rules},
    }
    if expect_needs_human is not None:
        pairs = [(p, e) for p, e in zip(parsed, expect_needs_human, strict=True) if e is not None]
        report["needs_human_accuracy"] = mean([float(p.needs_human is e) for p, e in pairs])
        for key, expected in (("handoff_reply_when_needed", True), ("handoff_reply_when_not_needed", False)):
            said = [float(says_handoff(p.answer)) for p, e in pairs if e is expected]
            if said:
                report[key] = mean(said)
    handoffs = [p for p in parsed if says_handoff(p.answer)]
    if handoffs:
        report["handoff_replies_flagged"] = mean([float(p.needs_human is True) for p in handoffs])
    return report


def knowledge_report(generations: Sequence[Any], answers: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Fact accuracy of replies against gold answer variants (:func:`ftrag.evaluate.is_correct` on
    the answer text), and the share of *confident wrong* replies: wrong, and not a hand-off
    (:func:`ftrag.evaluate.is_handoff`: neither flagged nor worded as one)."""
    from .evaluate import is_correct, is_handoff, mean, parse_reply

    parsed = [parse_reply(reply_text(g)) for g in generations]
    correct = [is_correct(p.answer, a) for p, a in zip(parsed, answers, strict=True)]
    confident_wrong = [not c and not is_handoff(p) for p, c in zip(parsed, correct)]
    return {"n": len(parsed), "accuracy": mean([float(c) for c in correct]),
            "confident_wrong": mean([float(c) for c in confident_wrong]),
            "correct": correct, "confident_wrong_flags": confident_wrong}


def behaviour_table(reports: Mapping[str, Mapping[str, Any]]):
    """Behaviour reports side by side (pandas DataFrame, one column per report, one row per metric)."""
    import pandas as pd

    rows: dict[str, dict[str, Any]] = {}
    for name, rep in reports.items():
        col = {"prompts": rep["n"], "JSON valid": rep["json_valid"], "voice score": rep["voice"]}
        col.update({f"voice: {rule.replace('_', ' ')}": share for rule, share in rep["voice_rules"].items()})
        if "needs_human_accuracy" in rep:
            col["needs_human correct"] = rep["needs_human_accuracy"]
        for key, label in (("handoff_reply_when_needed", "hand-off reply, when needed"),
                           ("handoff_reply_when_not_needed", "hand-off reply, when not needed"),
                           ("handoff_replies_flagged", "hand-off replies that set needs_human")):
            if key in rep:
                col[label] = rep[key]
        rows[name] = col
    return pd.DataFrame(rows)


def distinct_first(replies: Sequence[Any], n: int) -> list[int]:
    """Indices of up to ``n`` replies, the first of each distinct text before any repeat (then the
    rest in order): a sample that shows as many different replies as there are."""
    seen: set[str] = set()
    firsts, repeats = [], []
    for i, reply in enumerate(replies):
        (repeats if reply_text(reply) in seen else firsts).append(i)
        seen.add(reply_text(reply))
    return sorted((firsts + repeats)[:n])


def side_by_side(questions: Sequence[str], columns: Mapping[str, Sequence[Any]], *, n: int = 4,
                 width: int = 160):
    """A few replies of several models to the same questions (pandas DataFrame, texts shortened)."""
    import pandas as pd

    picks = evenly_spaced(range(len(questions)), n)

    def short(text: str) -> str:
        text = " ".join(text.split())
        return text if len(text) <= width else text[: width - 1] + "\u2026"

    return pd.DataFrame([{"question": short(questions[i]),
                          **{name: short(reply_text(replies[i])) for name, replies in columns.items()}}
                         for i in picks])

"""The four systems the course compares, and the one evaluation harness they all go through.

=============  ==========================  ==================
system         weights                     context
=============  ==========================  ==================
``base``       the profile's model         none
``rag``        the profile's model         top-k retrieved chunks
``finetuned``  model + behaviour adapter   none
``hybrid``     model + behaviour adapter   top-k retrieved chunks
=============  ==========================  ==================

All four send the same system prompt (:mod:`ftrag.prompts`) and are scored by the same functions,
so their numbers are comparable by construction.
"""
from __future__ import annotations

import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from . import evaluate, prompts
from .evaluate import ParsedReply
from .generation import Generation, Generator
from .rag import RetrievedChunk, Retriever, passages


@dataclass(frozen=True)
class Answer:
    """One system's answer to one question, with everything the metrics need."""

    question_id: str
    question: str
    reply: Generation
    parsed: ParsedReply
    retrieved: tuple[RetrievedChunk, ...] = ()
    retrieval_seconds: float = 0.0

    @property
    def text(self) -> str:
        """The answer text: the schema's ``answer`` field, or the raw reply when it is not JSON."""
        return self.parsed.answer

    @property
    def sources(self) -> tuple[str, ...]:
        """Sources the system reports: the ids the model cited in valid JSON; failing that, for a
        retrieval system, the articles it retrieved (what llama-index reports as source nodes)."""
        if self.parsed.valid and self.parsed.sources:
            return self.parsed.sources
        return tuple(dict.fromkeys(c.article_id for c in self.retrieved))

    @property
    def latency(self) -> float:
        return self.reply.seconds + self.retrieval_seconds


@dataclass
class System:
    name: str
    generator: Generator
    retriever: Retriever | None = None

    @property
    def uses_retrieval(self) -> bool:
        return self.retriever is not None

    def conversations(self, questions: Sequence[str]):
        if self.retriever is None:
            return [prompts.chat(q) for q in questions], [()] * len(questions), [0.0] * len(questions)
        retrieved, seconds = self.retriever.retrieve_many(questions)
        convs = [prompts.chat(q, passages(chunks)) for q, chunks in zip(questions, retrieved)]
        return convs, [tuple(c) for c in retrieved], seconds

    def ask(self, items: Sequence[tuple[str, str]], *, desc: str | None = None) -> list[Answer]:
        """Answer ``(question_id, question)`` pairs in batches."""
        ids = [i for i, _ in items]
        questions = [q for _, q in items]
        convs, retrieved, seconds = self.conversations(questions)
        replies = self.generator.generate(convs, desc=desc or f"{self.name}: answering")
        return [Answer(i, q, r, evaluate.parse_reply(r.text), ctx, s)
                for i, q, r, ctx, s in zip(ids, questions, replies, retrieved, seconds)]


# --------------------------------------------------------------------------- metrics over answers

HANDOFF_PATTERN = re.compile(
    r"don'?t have (that|this|the|any|enough) (information|info|details)|do not have (that|this|the|any) "
    r"(information|info|details)|not sure|can'?t find|cannot find|no information|not in the context|"
    r"teammate|human agent|support team will|pass(ing)? you to|hand(ing)? (you )?over|contact (our )?support",
    re.IGNORECASE)


def is_handoff(answer: Answer) -> bool:
    """The system declined and handed over: ``needs_human`` in valid JSON, else hand-off wording."""
    if answer.parsed.valid:
        return bool(answer.parsed.needs_human)
    return bool(HANDOFF_PATTERN.search(answer.parsed.raw))


def is_correct(answer: Answer, accepted: Sequence[str]) -> bool:
    return evaluate.matches(answer.text, accepted)


def cites_gold(answer: Answer, gold_ids: Sequence[str]) -> bool:
    """At least one reported source is a gold article, and none was invented (every cited id
    was among the retrieved passages; a system without retrieval has nothing to cite)."""
    sources = set(answer.sources)
    retrieved = {c.article_id for c in answer.retrieved}
    return bool(sources & set(gold_ids)) and sources <= retrieved


@dataclass
class Scores:
    """Per-question 0/1 outcomes of one system, and their means."""

    system: str
    correct: list[float] = field(default_factory=list)
    cited: list[float] = field(default_factory=list)
    valid: list[float] = field(default_factory=list)
    refused: list[float] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    prompt_tokens: list[int] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        return {
            "knowledge_accuracy": evaluate.mean(self.correct),
            "citation_accuracy": evaluate.mean(self.cited),
            "schema_validity": evaluate.mean(self.valid),
            "refusal_accuracy": evaluate.mean(self.refused),
            "median_latency_s": float(statistics.median(self.latency)) if self.latency else float("nan"),
            "prompt_tokens": evaluate.mean(self.prompt_tokens),
        }


def score(system: str, knowledge: Sequence[Answer], questions, unanswerable: Sequence[Answer] = (),
          *, after_update: bool = False) -> Scores:
    """Score answers to knowledge questions (gold answers; ``after_update`` uses the updated
    gold where a fact changed) and to unanswerable questions (a hand-off is the right answer)."""
    by_id = {q.id: q for q in questions}
    s = Scores(system)
    for a in knowledge:
        q = by_id[a.question_id]
        accepted = q.updated_answers if after_update and q.changes_after_update else q.answers
        gold_ids = (q.updated_article_ids or q.article_ids) if after_update and q.changes_after_update \
            else q.article_ids
        s.correct.append(float(is_correct(a, accepted)))
        s.cited.append(float(cites_gold(a, gold_ids)))
    for a in (*knowledge, *unanswerable):
        s.valid.append(float(a.parsed.valid))
        s.latency.append(a.latency)
        s.prompt_tokens.append(a.reply.prompt_tokens)
    for a in unanswerable:
        s.refused.append(float(is_handoff(a)))
    return s


def answers_table(answers: Sequence[Answer], questions=None, *, limit: int | None = None):
    """A pandas table of answers for display (question, reply, sources, correct when gold known)."""
    import pandas as pd

    by_id = {q.id: q for q in questions or ()}
    rows = []
    for a in answers[:limit]:
        row = {"id": a.question_id, "question": a.question, "reply": a.parsed.raw[:160],
               "sources": ", ".join(a.sources), "valid JSON": a.parsed.valid}
        if a.question_id in by_id:
            row["gold"] = by_id[a.question_id].answers[0]
            row["correct"] = is_correct(a, by_id[a.question_id].answers)
        rows.append(row)
    return pd.DataFrame(rows)

"""The controlled knowledge-injection test: the same facts, learned by fine-tuning or retrieved.

After Ovadia et al. (2024), "Fine-tuning or retrieval?": every system answers **the same questions
about the same facts**, so the difference between them is the way the facts reach the model.

* ``base``: the profile's model, no context (what it knows without either);
* ``inject adapter``: the model with the adapter trained on the fact Q&A
  (``data/inject_facts/train.jsonl``), no context;
* ``rag``: the untouched model, with the top-k of a llama-index ``VectorStoreIndex`` over the facts
  written as one short document each (``data/inject_facts/facts.jsonl``) in its prompt.

The questions are the held-out paraphrases (``test.jsonl``, several per fact) of the facts the
adapter was trained on. All three go through :class:`ftrag.systems.System` and are scored by
:func:`ftrag.systems.score` (``evaluate.is_correct``), with 95% Wilson intervals and McNemar's
paired test.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from . import evaluate, rag
from .errors import CourseError

#: Fewer questions than this, or fewer per fact, and the comparison is too small to read.
MIN_QUESTIONS = 40
MIN_PER_FACT = 2


def fact_documents(facts) -> list:
    """One llama-index ``Document`` per fact: its statement, with the fact id as the document id
    (so a retrieved node names its fact, like an article id in :mod:`ftrag.rag`)."""
    from llama_index.core import Document

    docs = []
    for fact in facts:
        if not fact.statement.strip():
            raise CourseError(f"{fact.source or fact.fact_id}: the statement of {fact.fact_id} is empty; write "
                              "the sentence that states the fact (data/scripts/make_inject_facts.py).")
        docs.append(Document(text=fact.statement.strip(), id_=fact.fact_id, metadata={"fact_id": fact.fact_id},
                             excluded_embed_metadata_keys=["fact_id"], excluded_llm_metadata_keys=["fact_id"]))
    return docs


def retriever(index, top_k: int, *, n_facts: int | None = None) -> rag.Retriever:
    """The course's :class:`ftrag.rag.Retriever` (dense, top-k) over a ``VectorStoreIndex`` of facts,
    so :class:`ftrag.systems.System` can put its passages in the prompt."""
    n = n_facts if n_facts is not None else len(index.ref_doc_info)
    info = rag.IndexInfo(index, rag.ChunkSettings(), n, n, 0.0)
    return rag.Retriever(info, top_k=top_k)


def check_questions(questions: Sequence) -> dict[str, int]:
    """Questions per fact, after checking the set is large enough to compare systems on (at least
    :data:`MIN_QUESTIONS` questions and :data:`MIN_PER_FACT` per fact)."""
    per_fact: dict[str, int] = {}
    for q in questions:
        per_fact[q.fact_id] = per_fact.get(q.fact_id, 0) + 1
    thin = sorted(f for f, n in per_fact.items() if n < MIN_PER_FACT)
    if len(questions) < MIN_QUESTIONS or thin:
        raise CourseError(
            f"The injection test needs at least {MIN_QUESTIONS} questions and {MIN_PER_FACT} per fact; got "
            f"{len(questions)} over {len(per_fact)} facts" + (f" ({', '.join(thin)} with fewer)" if thin else "")
            + ". Use more facts (`inject.inject_setup(..., n_facts=...)`) or add paraphrases to "
              "data/scripts/make_inject_facts.py.")
    return per_fact


@dataclass
class InjectionComparison:
    """Accuracy of each system on the same paraphrases, with the per-question outcomes."""

    scores: dict  # system name -> ftrag.systems.Scores
    n_facts: int
    answers: dict = field(default_factory=dict)  # system name -> list[Answer]
    seconds: dict = field(default_factory=dict)  # system name -> seconds to answer them all

    @property
    def n_questions(self) -> int:
        return len(next(iter(self.scores.values())).correct)

    def rate(self, system: str) -> tuple[float, float, float]:
        """``(accuracy, 95% Wilson low, high)`` of one system."""
        correct = self.scores[system].correct
        return (evaluate.mean(correct), *evaluate.wilson_ci(correct))

    def paired(self, a: str, b: str) -> evaluate.PairedTest:
        """McNemar's exact test of ``a`` against ``b`` on the same questions."""
        from .systems import paired

        return paired(self.scores[a], self.scores[b])

    def verdict(self, a: str, b: str) -> str:
        """One sentence on ``a`` against ``b`` that follows the numbers: whether their 95% intervals
        overlap, and McNemar's paired test on the same questions (so a page can quote it whatever
        the measurement shows)."""
        (acc_a, lo_a, hi_a), (acc_b, lo_b, hi_b) = self.rate(a), self.rate(b)
        test = self.paired(a, b)
        paired = (f"{test.a_only} questions only {a} got right and {test.b_only} only {b} got right, "
                  f"McNemar p = {test.p_value:.2g}")
        if lo_a <= hi_b and lo_b <= hi_a:
            return (f"the 95% intervals of {a} ({lo_a:.2f}-{hi_a:.2f}) and {b} ({lo_b:.2f}-{hi_b:.2f}) overlap, "
                    f"so on {self.n_questions} questions the intervals alone do not separate them ({paired})")
        ahead = a if acc_a > acc_b else b
        return (f"the 95% intervals of {a} ({lo_a:.2f}-{hi_a:.2f}) and {b} ({lo_b:.2f}-{hi_b:.2f}) do not overlap: "
                f"{ahead} answered more of the same {self.n_questions} questions right ({paired})")

    def table(self):
        """One row per system: questions, accuracy with its interval, confident-and-wrong share,
        and for retrieval how often the question's own fact was retrieved."""
        import pandas as pd

        rows = {}
        for name, s in self.scores.items():
            acc, lo, hi = self.rate(name)
            rows[name] = {"questions": len(s.correct), "accuracy": f"{acc:.2f} [{lo:.2f}-{hi:.2f}]",
                          "confident and wrong": f"{evaluate.mean(s.confident_wrong):.2f}",
                          "own fact retrieved": f"{evaluate.mean(s.retrieved_gold):.2f}" if s.retrieved_gold else "n/a"}
        return pd.DataFrame(rows).T


def compare(systems: dict, questions: Sequence) -> InjectionComparison:
    """Ask every system the same ``questions`` (:class:`ftrag.data.InjectFactQuestion`) and score
    them with the one harness (:func:`ftrag.systems.score`)."""
    from .systems import score

    per_fact = check_questions(questions)
    items = [(q.id, q.question) for q in questions]
    scores, answers, seconds = {}, {}, {}
    for name, system in systems.items():
        start = time.perf_counter()
        answers[name] = system.ask(items, desc=f"{name}: fact paraphrases")
        seconds[name] = time.perf_counter() - start
        scores[name] = score(name, answers[name], questions)
    return InjectionComparison(scores, len(per_fact), answers, seconds)


__all__ = ["MIN_QUESTIONS", "MIN_PER_FACT", "fact_documents", "retriever", "check_questions",
           "InjectionComparison", "compare"]

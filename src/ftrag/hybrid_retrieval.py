"""Keyword search (BM25), its fusion with dense search, and which kind of question each one serves.

Dense retrieval matches meaning; it is weak on exact strings that carry little meaning to an embedder
("E34", "GU10"). BM25 scores chunks by the words they share with the question, weighted by how rare
each word is, so a rare code is a strong signal. Reciprocal rank fusion (RRF) merges the two ranked
lists using ranks only, so BM25's unbounded scores and cosine similarities never need to be put on
one scale. :class:`ftrag.rag.Retriever` uses this module for ``mode="bm25"`` and ``mode="hybrid"``.
"""
from __future__ import annotations

import re
from collections.abc import Hashable, Sequence

from .errors import CourseError

RETRIEVAL_MODES = ("dense", "bm25", "hybrid")
# Cormack, Clarke and Buettcher (2009) found k = 60 a robust default; llama-index uses the same value.
RRF_K = 60
# How many candidates each retriever hands to the fusion before the top k are kept.
FUSION_DEPTH = 20

QUESTION_TYPES = ("exact", "paraphrased")
# A token with a digit in it (E21, GU10, CR2032, IP54, 2FA, "5 GHz", "December 3") or a price.
_EXACT = re.compile(r"\w*\d\w*|[$€£]")


def question_type(question: str) -> str:
    """``"exact"`` when the question holds a code, model number, figure or price that a customer
    would type exactly as the article writes it; ``"paraphrased"`` for everything else."""
    if not question.strip():
        raise CourseError("An empty question has no type; give the question text.")
    return "exact" if _EXACT.search(question) else "paraphrased"


def check_mode(mode: str) -> str:
    if mode not in RETRIEVAL_MODES:
        raise CourseError(f"Unknown retrieval mode {mode!r}; use one of {', '.join(RETRIEVAL_MODES)}.")
    return mode


def reciprocal_rank_fusion(rankings: Sequence[Sequence[Hashable]], *, k: int = RRF_K) -> list[tuple[Hashable, float]]:
    """Fuse ranked lists of ids: each id scores ``sum(1 / (k + rank))`` over the lists it appears in
    (rank 1 = first). Returns ``(id, score)`` best first; ties keep the order in which the ids were
    first seen, reading the lists in the order given, so the result is deterministic."""
    if k <= 0:
        raise CourseError(f"RRF needs k > 0 (got {k}); the usual value is {RRF_K}.")
    scores: dict[Hashable, float] = {}
    for ranking in rankings:
        if len(set(ranking)) != len(ranking):
            raise CourseError("A ranking passed to reciprocal_rank_fusion lists an id twice; de-duplicate it first.")
        for rank, item in enumerate(ranking, 1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    first_seen = {item: i for i, item in enumerate(scores)}
    return sorted(scores.items(), key=lambda pair: (-pair[1], first_seen[pair[0]]))


class KeywordIndex:
    """BM25 over an index's chunks (llama-index's ``BM25Retriever``: English stemming and stop words),
    built from the docstore once per revision of the index, so an update is picked up."""

    def __init__(self, info):
        self.info = info
        self._revision = None
        self._retriever = None
        self._depth = 0

    def search(self, question: str, depth: int) -> list:
        """The ``depth`` best chunks by BM25 as llama-index ``NodeWithScore``s, best first."""
        from llama_index.core.schema import QueryBundle

        if self._retriever is None or self._revision != self.info.revision or self._depth != depth:
            self._build(depth)
        return self._retriever.retrieve(QueryBundle(query_str=question))

    def _build(self, depth: int) -> None:
        from llama_index.retrievers.bm25 import BM25Retriever

        nodes = list(self.info.index.docstore.docs.values())
        if not nodes:
            raise CourseError("BM25 needs the chunks' text, and this index's docstore is empty; build the index "
                              "with rag.build_index (or vector_store.build_qdrant_index, which keeps the text).")
        self._retriever = BM25Retriever.from_defaults(nodes=nodes, similarity_top_k=min(depth, len(nodes)))
        self._revision, self._depth = self.info.revision, depth


def fuse_hits(dense_hits: Sequence, keyword_hits: Sequence, top_k: int, *, k: int = RRF_K) -> list:
    """RRF over two lists of llama-index ``NodeWithScore`` (by node id); the fused score replaces
    each hit's score. Returns the ``top_k`` best."""
    from llama_index.core.schema import NodeWithScore

    by_id = {}
    for hit in (*dense_hits, *keyword_hits):
        by_id.setdefault(hit.node.node_id, hit.node)
    fused = reciprocal_rank_fusion([[h.node.node_id for h in dense_hits], [h.node.node_id for h in keyword_hits]],
                                   k=k)
    return [NodeWithScore(node=by_id[node_id], score=score) for node_id, score in fused[:top_k]]


# --------------------------------------------------------------------------- comparison


def compare_retrievers(info, questions, *, modes: Sequence[str] = RETRIEVAL_MODES, max_k: int = 10) -> list[dict]:
    """hit@1, hit@5 and MRR of each retrieval mode over ``questions`` (any list: all, dev or test),
    for all of them and split by :func:`question_type`. One row per (mode, question type)."""
    from . import rag

    types = [question_type(q.question) for q in questions]
    rows = []
    for mode in modes:
        report = rag.retrieval_report(info, questions, max_k=max_k, mode=mode)
        for group in ("all", *QUESTION_TYPES):
            ranks = [r for r, t in zip(report.first_gold_rank, types) if group in ("all", t)]
            if not ranks:
                continue
            sub = rag.report_from_ranks(ranks, max_k)
            rows.append({"retriever": mode, "questions": group, "n": sub.n_questions,
                         "hit@1": sub.hit_at[1], "hit@5": sub.hit_at[min(5, max_k)], "MRR": sub.mrr})
    return rows

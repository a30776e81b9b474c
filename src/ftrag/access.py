"""Access control in retrieval: answer a customer only from articles that apply to them.

Some help-centre articles apply to one store only (front matter ``regions: eu, uk``; see
``data/README.md``): US returns are free and take 30 days, EU returns take 45. A customer of the
UK store must not be answered from the US article, however similar the question. The filter is
applied **inside the vector store, before ranking**, with llama-index's metadata filters:

    MetadataFilters(filters=[MetadataFilter(key="regions", value=["uk", "all"], operator=FilterOperator.ANY)])

so an article outside the customer's stores can never reach the prompt (filtering the top-k
afterwards would only shorten the list, and leave the prompt short of allowed passages).
Every chunk carries its article's ``regions`` list (``["all"]`` for articles without the line).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .errors import CourseError
from .rag import ALL_REGIONS, IndexInfo, Retriever


def check_region(region: str) -> str:
    from .data import REGIONS

    if region not in REGIONS:
        raise CourseError(f"Unknown region {region!r}; use one of {', '.join(REGIONS)} (the stores the "
                          "articles' 'regions:' front matter names, see data/README.md).")
    return region


def region_filters(region: str, *, store: str = "simple"):
    """The metadata filter "the article applies to every customer, or to customers of ``region``".

    ``store="simple"`` (llama-index's in-memory store) reads list metadata with ``ANY``; Qdrant
    (``store="qdrant"``, :mod:`ftrag.vector_store`) spells the same test ``IN`` (a match-any on the
    list payload)."""
    from llama_index.core.vector_stores import FilterOperator, MetadataFilter, MetadataFilters

    operator = {"simple": FilterOperator.ANY, "qdrant": FilterOperator.IN}.get(store)
    if operator is None:
        raise CourseError(f"Unknown vector store {store!r}; use 'simple' or 'qdrant'.")
    return MetadataFilters(filters=[MetadataFilter(key="regions", value=[check_region(region), ALL_REGIONS],
                                                   operator=operator)])


def applies_to(article, region: str) -> bool:
    """Whether a customer of ``region`` may be answered from ``article`` (no regions: everyone)."""
    regions = getattr(article, "regions", ())
    return not regions or region in regions


def allowed_ids(articles, region: str) -> set[str]:
    """Ids of the articles a customer of ``region`` may be answered from."""
    check_region(region)
    return {a.id for a in articles if applies_to(a, region)}


def filtered_retriever(info: IndexInfo, region: str, top_k: int) -> Retriever:
    """The course's dense :class:`~ftrag.rag.Retriever`, restricted to ``region``'s articles."""
    return Retriever(info, top_k=top_k, filters=region_filters(region, store=info.vector_store))


@dataclass
class LeakCount:
    """Over ``questions`` questions, retrieved chunks whose article lies outside the customer's
    region, unfiltered and filtered, and how many questions had at least one such chunk."""

    region: str
    questions: int
    top_k: int
    chunks_outside_unfiltered: int
    chunks_outside_filtered: int
    questions_with_outside_unfiltered: int
    questions_with_outside_filtered: int
    outside_articles: tuple[str, ...]   # which articles leaked without the filter


def count_leaks(info: IndexInfo, articles, questions: Sequence[str], region: str, top_k: int) -> LeakCount:
    """Ask every question with and without the region filter and count chunks from articles that
    do not apply to a customer of ``region``."""
    allowed = allowed_ids(articles, region)
    unfiltered = Retriever(info, top_k=top_k)
    filtered = filtered_retriever(info, region, top_k)
    counts = {False: [0, 0], True: [0, 0]}
    leaked: dict[str, None] = {}
    for question in questions:
        for use_filter, retriever in ((False, unfiltered), (True, filtered)):
            outside = [c.article_id for c in retriever.retrieve(question) if c.article_id not in allowed]
            counts[use_filter][0] += len(outside)
            counts[use_filter][1] += bool(outside)
            if not use_filter:
                leaked.update(dict.fromkeys(outside))
    return LeakCount(region, len(questions), top_k, counts[False][0], counts[True][0], counts[False][1],
                     counts[True][1], tuple(sorted(leaked)))


__all__ = ["check_region", "region_filters", "applies_to", "allowed_ids", "filtered_retriever", "LeakCount",
           "count_leaks"]

import pytest
from _embedders import hashing_embedder  # noqa: F401 - fixture
from test_rag import ARTICLES, QUESTIONS, _article

from ftrag import data, hybrid_retrieval as hybrid, rag
from ftrag.data import KnowledgeQuestion
from ftrag.errors import CourseError


# --------------------------------------------------------------------------- reciprocal rank fusion


def test_rrf_scores_are_sums_of_reciprocal_ranks():
    fused = dict(hybrid.reciprocal_rank_fusion([["a", "b", "c"], ["c", "a"]], k=60))
    assert fused["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert fused["b"] == pytest.approx(1 / 62)
    assert fused["c"] == pytest.approx(1 / 63 + 1 / 61)


def test_rrf_rewards_agreement_over_one_first_place():
    # "x" is first in one list only; "y" is second in both, so it wins
    order = [item for item, _ in hybrid.reciprocal_rank_fusion([["x", "y", "z"], ["w", "y", "v"]])]
    assert order[0] == "y" and set(order) == {"x", "y", "z", "w", "v"}


def test_rrf_ties_keep_first_seen_order():
    order = [item for item, _ in hybrid.reciprocal_rank_fusion([["a", "b"], ["b", "a"]])]
    assert order == ["a", "b"]
    order = [item for item, _ in hybrid.reciprocal_rank_fusion([["b", "a"], ["a", "b"]])]
    assert order == ["b", "a"]


def test_rrf_small_k_lets_the_top_rank_dominate():
    # "y" is fourth in both lists: with k=60 that beats one first place, with k=1 it does not
    rankings = [["x", "a", "b", "y"], ["w", "c", "d", "y"]]
    big = [item for item, _ in hybrid.reciprocal_rank_fusion(rankings, k=60)]
    small = [item for item, _ in hybrid.reciprocal_rank_fusion(rankings, k=1)]
    assert big[0] == "y" and small[:3] == ["x", "w", "y"]


def test_rrf_refuses_bad_input():
    with pytest.raises(CourseError, match="k > 0"):
        hybrid.reciprocal_rank_fusion([["a"]], k=0)
    with pytest.raises(CourseError, match="lists an id twice"):
        hybrid.reciprocal_rank_fusion([["a", "a"]])


# --------------------------------------------------------------------------- question types


@pytest.mark.parametrize("question_id, expected", [
    ("k001", "paraphrased"),   # "How much will Lumio Plus cost me if I pay every month?"
    ("k003", "paraphrased"),   # "... How many calls per hour does a Pro account get?"
])
def test_questions_without_codes_are_paraphrased(question_id, expected):
    question = {q.id: q for q in data.load_all().knowledge}[question_id]
    assert hybrid.question_type(question.question) == expected


def test_real_questions_with_error_codes_and_bulb_types_are_exact():
    knowledge = data.load_all().knowledge
    exact = [q.question for q in knowledge if hybrid.question_type(q.question) == "exact"]
    for code in ("E21", "E34", "E27", "GU10"):
        assert any(code in q for q in exact), code
    assert 0 < len(exact) < len(knowledge)


@pytest.mark.parametrize("text, expected", [
    ("Which battery does the remote take, a CR2032?", "exact"),
    ("Is the Strip IP54 rated?", "exact"),
    ("Does it cost $5?", "exact"),
    ("My lamp keeps blinking, what now?", "paraphrased"),
])
def test_question_type_rules(text, expected):
    assert hybrid.question_type(text) == expected


def test_empty_question_and_unknown_mode_are_clear_errors():
    with pytest.raises(CourseError, match="empty question"):
        hybrid.question_type("  ")
    with pytest.raises(CourseError, match="Unknown retrieval mode 'sparse'"):
        hybrid.check_mode("sparse")


# --------------------------------------------------------------------------- retrievers


def test_bm25_and_hybrid_keep_the_retriever_interface(hashing_embedder):
    info = rag.build_index(ARTICLES, rag.ChunkSettings(64, 0))
    for mode in hybrid.RETRIEVAL_MODES:
        retriever = rag.Retriever(info, top_k=2, mode=mode)
        chunks, seconds = retriever.retrieve_many(["Can the strip be cut?", "return within 30 days"])
        assert retriever.top_k == 2 and len(seconds) == 2
        assert [c[0].article_id for c in chunks] == ["kb-strip", "kb-returns"], mode
        assert all(len(c) == 2 for c in chunks)


def test_bm25_sees_an_update(hashing_embedder):
    info = rag.build_index(ARTICLES, rag.ChunkSettings(64, 0))
    retriever = rag.Retriever(info, top_k=1, mode="bm25")
    assert retriever.retrieve("gift card expiry")[0].article_id != "kb-gift"
    rag.apply_update(info, [_article("kb-gift", "Gift cards", "Gift cards never expire.")])
    assert retriever.retrieve("gift card expiry")[0].article_id == "kb-gift"


def test_compare_retrievers_splits_by_question_type(hashing_embedder):
    info = rag.build_index(ARTICLES, rag.ChunkSettings(64, 0))
    questions = [*QUESTIONS, KnowledgeQuestion("q4", "Is the strip 2 metres long?", ("yes",), ("kb-strip",), False,
                                               (), ())]
    table = {(row["retriever"], row["questions"]): row for row in hybrid.compare_retrievers(info, questions, max_k=3)}
    assert set(table) == {(m, g) for m in hybrid.RETRIEVAL_MODES for g in ("all", "exact", "paraphrased")}
    for mode in hybrid.RETRIEVAL_MODES:
        assert [table[(mode, g)]["n"] for g in ("all", "exact", "paraphrased")] == [4, 1, 3]
        report = rag.retrieval_report(info, questions, max_k=3, mode=mode)
        assert table[(mode, "all")]["MRR"] == pytest.approx(report.mrr)
        exact_rank = report.first_gold_rank[3]
        assert table[(mode, "exact")]["MRR"] == pytest.approx(1 / exact_rank if exact_rank else 0.0)

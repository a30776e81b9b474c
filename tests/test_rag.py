import datetime as dt
from pathlib import Path

import pytest

from ftrag import rag
from ftrag.data import Article, KnowledgeQuestion
from ftrag.errors import CourseError


def _article(id_, title, body):
    return Article(id=id_, title=title, category="products", updated=dt.date(2026, 1, 1), body=body,
                   path=Path(f"{id_}.md"))


ARTICLES = [
    _article("kb-halo", "Lumio Halo desk lamp", "The Halo desk lamp has a 2-year warranty. It dims from 1 to 100%."),
    _article("kb-strip", "Lumio Strip", "The Strip light is 2 metres long and can be cut every 10 cm."),
    _article("kb-returns", "Returns", "You can return any product within 30 days of delivery for a refund."),
]
QUESTIONS = [
    KnowledgeQuestion("q1", "How long is the warranty on the Halo?", ("2-year",), ("kb-halo",), False, (), ()),
    KnowledgeQuestion("q2", "Can I shorten my light strip?", ("10 cm",), ("kb-strip",), False, (), ()),
    KnowledgeQuestion("q3", "How many days do I have to send something back?", ("30 days",), ("kb-returns",),
                      False, (), ()),
]


@pytest.fixture(scope="module")
def configured(cpu_profile):
    return rag.configure(cpu_profile)


def test_index_has_stable_chunk_ids_and_retrieves_the_right_article(configured):
    info = rag.build_index(ARTICLES, rag.ChunkSettings(64, 0))
    assert info.n_chunks == 3 and set(info.index.ref_doc_info) == {"kb-halo", "kb-strip", "kb-returns"}
    top = rag.Retriever(info, top_k=1).retrieve("What is the Halo warranty?")[0]
    assert top.article_id == "kb-halo" and top.node_id == "kb-halo-0" and 0 < top.score <= 1


def test_retrieval_report_hit_at_k_and_mrr(configured):
    report = rag.retrieval_report(rag.build_index(ARTICLES), QUESTIONS, max_k=3)
    assert report.hit_at[3] == 1.0 and report.hit_at[1] <= report.hit_at[2] <= report.hit_at[3]
    assert report.mrr == pytest.approx(sum(1 / r for r in report.first_gold_rank) / 3)


def test_unknown_gold_id_is_a_clear_error(configured):
    bad = [KnowledgeQuestion("q9", "?", ("x",), ("kb-nope",), False, (), ())]
    with pytest.raises(CourseError, match=r"q9 names gold article\(s\) \['kb-nope'\]"):
        rag.retrieval_report(rag.build_index(ARTICLES), bad)


def test_persist_reload_and_update_without_touching_the_original(configured, tmp_path):
    info = rag.build_index(ARTICLES)
    rag.persist(info, tmp_path / "v1")
    reloaded = rag.load_index(tmp_path / "v1")
    new = [_article("kb-halo", "Lumio Halo desk lamp", "The Halo desk lamp now has a 3-year warranty."),
           _article("kb-gift", "Gift cards", "Gift cards never expire.")]
    update = rag.apply_update(reloaded, new, persist_dir=tmp_path / "v2")
    assert update.replaced == ["kb-halo"] and update.added == ["kb-gift"]
    top = rag.Retriever(rag.load_index(tmp_path / "v2"), top_k=1).retrieve("Halo warranty length")[0]
    assert "3-year" in top.text
    original = rag.Retriever(rag.load_index(tmp_path / "v1"), top_k=1).retrieve("Halo warranty length")[0]
    assert "2-year" in original.text


def test_missing_index_names_the_fix(configured, tmp_path):
    with pytest.raises(CourseError, match="No complete index"):
        rag.load_index(tmp_path / "nothing-here")


def test_empty_article_names_the_file(configured):
    with pytest.raises(CourseError, match=r"empty\.md: the article body is empty"):
        rag.build_index([_article("empty", "Empty", "   ")])


def test_bad_chunking_cuts_an_article_into_more_chunks_than_sentences():
    # long enough (about 90 tokens) that a 24-token window must cut it, short enough for one 128-token chunk
    body = ("The Halo desk lamp has a 2-year warranty. It dims from 1 to 100% in ten steps. The arm turns "
            "through 270 degrees and the head tilts by 90 degrees. A USB-C port in the base charges a phone "
            "at 15 W. The lamp draws 9 W at full brightness and 0.3 W on standby. It ships in white, black "
            "and sand.")
    article = [_article("kb-halo", "Lumio Halo desk lamp", body)]
    bad, good = rag.chunk(article, rag.BAD_CHUNKING), rag.chunk(article, rag.ChunkSettings(128, 16))
    assert len(good) == 1 and len(bad) >= 3
    assert all(node.metadata["article_id"] == "kb-halo" for node in bad)

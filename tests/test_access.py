"""Access control: a region-filtered query never returns an article outside the region."""
import pytest
from _embedders import hashing_embedder  # noqa: F401 - fixture

from ftrag import access, data, rag, vector_store
from ftrag.errors import CourseError, DataError


@pytest.fixture(scope="module")
def course():
    return data.load_all()


def _questions(course):
    # every question of every evaluation set: 147 + 30, worded like customers
    return [q.question for q in (*course.knowledge, *course.unanswerable)]


def _regional_questions(course):
    # the knowledge questions whose gold article is limited to some stores (shipping, returns)
    regional = {a.id for a in course.kb if a.regions}
    return [q.question for q in course.knowledge if set(q.article_ids) & regional]


def test_regions_come_from_the_front_matter(course):
    by_id = {a.id: a for a in course.kb}
    assert by_id["kb-returns-eu"].regions == ("eu", "uk") and by_id["kb-shipping-us"].regions == ("us",)
    assert by_id["kb-plan-plus"].regions == ()          # no line: every customer
    assert access.allowed_ids(course.kb, "uk") >= {"kb-returns-eu", "kb-shipping-uk", "kb-plan-plus"}
    assert not access.allowed_ids(course.kb, "uk") & {"kb-returns-us", "kb-shipping-us", "kb-shipping-eu"}
    after = {a.id: a for a in course.kb_after_update}
    assert after["kb-shipping-eu"].regions == ("eu",)    # the updated article keeps its region


def test_filtered_retrieval_never_leaves_the_region(hashing_embedder, course):
    info = rag.build_index(course.kb, rag.ChunkSettings(128, 16))
    questions = _regional_questions(course)
    assert len(questions) >= 15
    for region in data.REGIONS:
        leaks = access.count_leaks(info, course.kb, questions, region, top_k=3)
        assert leaks.chunks_outside_filtered == 0 and leaks.questions_with_outside_filtered == 0, region
        assert leaks.chunks_outside_unfiltered > 0, region   # without the filter other stores' articles come back
    retriever = access.filtered_retriever(info, "uk", top_k=3)
    assert all(len(retriever.retrieve(q)) == 3 for q in questions)   # filtered before ranking: k stay k


@pytest.mark.slow
def test_filtered_retrieval_never_leaves_the_region_on_every_question(hashing_embedder, course):
    info = rag.build_index(course.kb, rag.DEFAULT_CHUNKING)
    for region in data.REGIONS:
        leaks = access.count_leaks(info, course.kb, _questions(course), region, top_k=5)
        assert leaks.questions == 177 and leaks.chunks_outside_filtered == 0, region


@pytest.mark.slow
def test_filter_on_qdrant_too(hashing_embedder, course, tmp_path, monkeypatch):
    monkeypatch.delenv(vector_store.QDRANT_URL_ENV, raising=False)
    folder = tmp_path / "kb-qdrant"
    try:
        info = vector_store.build_qdrant_index(course.kb, rag.ChunkSettings(128, 16), folder)
        leaks = access.count_leaks(info, course.kb, _regional_questions(course), "eu", top_k=3)
        assert leaks.chunks_outside_filtered == 0 < leaks.chunks_outside_unfiltered
    finally:
        vector_store.close_client(folder)


def test_bad_region_and_bad_mode_are_refused(hashing_embedder, course):
    with pytest.raises(CourseError, match="Unknown region 'mars'.*us, eu, uk, international"):
        access.region_filters("mars")
    info = rag.build_index(course.kb[:5], rag.ChunkSettings(64, 0))
    with pytest.raises(CourseError, match="mode='dense'"):
        rag.Retriever(info, top_k=2, mode="bm25", filters=access.region_filters("eu"))


def test_bad_regions_line_names_the_file_and_line(tmp_path):
    path = tmp_path / "kb-test.md"
    path.write_text("---\nid: kb-test\ntitle: T\ncategory: policies\nupdated: 2024-01-01\nregions: eu, mars\n---\n"
                    "# T\n\nSome text.\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"kb-test.md:6: bad regions 'eu, mars' \(list distinct stores from us, eu, uk"):
        data.load_kb(tmp_path)


def test_regions_leave_the_embedded_and_prompt_text_as_it_was(course):
    """The metadata is kept out of both texts, so chunking, embeddings and prompts do not move."""
    import dataclasses

    plain = [dataclasses.replace(a, regions=()) for a in course.kb]
    with_regions, without = rag.chunk(course.kb), rag.chunk(plain)
    assert [n.node_id for n in with_regions] == [n.node_id for n in without]
    for mode in ("embed", "llm"):
        assert [n.get_content(metadata_mode=mode) for n in with_regions] == \
            [n.get_content(metadata_mode=mode) for n in without]
    assert {tuple(n.metadata["regions"]) for n in with_regions} >= {("all",), ("eu", "uk"), ("us",)}

"""Qdrant behind the same Retriever, and the checks that stop a mismatched index from being used.

The fast tests use a hashing embedder (tests/_embedders.py); the ones marked slow load the real one."""
import json

import pytest
from _embedders import HashingEmbedding, hashing_embedder  # noqa: F401 - fixture
from test_rag import ARTICLES, QUESTIONS, _article

from ftrag import data, rag, vector_store
from ftrag.errors import CourseError

SMALL = rag.ChunkSettings(64, 0)


@pytest.fixture
def qdrant_dir(tmp_path, monkeypatch):
    monkeypatch.delenv(vector_store.QDRANT_URL_ENV, raising=False)
    yield tmp_path / "kb-qdrant"
    vector_store.close_client(tmp_path / "kb-qdrant")


def _top_ids(info, questions, k):
    retriever = rag.Retriever(info, top_k=k)
    return [[c.node_id for c in retriever.retrieve(q.question)] for q in questions]


# --------------------------------------------------------------------------- fingerprints (simple store)


def test_index_built_with_another_embedder_is_refused(hashing_embedder, cpu_profile, tmp_path):
    rag.persist(rag.build_index(ARTICLES, SMALL), tmp_path / "idx")
    rag.configure(cpu_profile, embedder=HashingEmbedding(32))
    with pytest.raises(rag.IndexMismatch, match=r"built with the embedder hashing-64 \(64-d .* configured with "
                                                r"hashing-32 \(32-d\).*rebuild"):
        rag.load_index(tmp_path / "idx")


def test_index_built_with_another_chunking_is_refused(hashing_embedder, tmp_path):
    rag.persist(rag.build_index(ARTICLES, SMALL), tmp_path / "idx")
    assert rag.load_index(tmp_path / "idx", chunking=SMALL).chunking == SMALL
    with pytest.raises(rag.IndexMismatch, match=r"chunked as 'sentence 64/0', not 'sentence 128/16'.*ensure_index"):
        rag.load_index(tmp_path / "idx", chunking=rag.DEFAULT_CHUNKING)


def test_index_without_fingerprint_is_refused_and_ensure_index_rebuilds_it(hashing_embedder, tmp_path, monkeypatch):
    monkeypatch.setenv("FTRAG_CACHE_DIR", str(tmp_path))
    built = rag.ensure_index(ARTICLES, SMALL)
    meta_file = built.persist_dir / "ftrag_index.json"
    meta = json.loads(meta_file.read_text())
    assert meta["embedder"] == {"name": "hashing-64", "dimension": 64}
    meta_file.write_text(json.dumps({k: v for k, v in meta.items() if k != "embedder"}))  # an old-style index
    with pytest.raises(rag.IndexMismatch, match="does not record which embedder"):
        rag.load_index(built.persist_dir)
    rebuilt = rag.ensure_index(ARTICLES, SMALL)
    assert not rebuilt.cached and "embedder" in json.loads(meta_file.read_text())
    assert rag.ensure_index(ARTICLES, SMALL).cached


# --------------------------------------------------------------------------- Qdrant


def test_qdrant_build_persist_reload_and_update(hashing_embedder, qdrant_dir):
    info = vector_store.build_qdrant_index(ARTICLES, SMALL, qdrant_dir)
    assert info.vector_store == "qdrant" and (qdrant_dir / vector_store.QDRANT_SUBDIR).is_dir()
    assert rag.Retriever(info, top_k=1).retrieve("Halo warranty")[0].node_id == "kb-halo-0"
    vector_store.close_client(qdrant_dir)            # reload from disk, as a new process would

    reloaded = rag.load_index(qdrant_dir, chunking=SMALL)
    assert reloaded.vector_store == "qdrant" and set(reloaded.index.ref_doc_info) == {a.id for a in ARTICLES}
    new = [_article("kb-halo", "Lumio Halo desk lamp", "The Halo desk lamp now has a 3-year warranty."),
           _article("kb-gift", "Gift cards", "Gift cards never expire.")]
    update = rag.apply_update(reloaded, new)
    assert update.replaced == ["kb-halo"] and update.added == ["kb-gift"]
    vector_store.close_client(qdrant_dir)

    after = rag.load_index(qdrant_dir)
    client = after.index.vector_store.client
    assert client.count(vector_store.collection_name(qdrant_dir)).count == 4   # old Halo chunk gone, gift added
    assert "3-year" in rag.Retriever(after, top_k=1).retrieve("Halo warranty")[0].text
    assert rag.Retriever(after, top_k=1, mode="bm25").retrieve("gift cards expire")[0].article_id == "kb-gift"


def test_qdrant_and_simple_store_return_the_same_chunks(hashing_embedder, qdrant_dir):
    simple = rag.build_index(ARTICLES, SMALL)
    qdrant = vector_store.build_qdrant_index(ARTICLES, SMALL, qdrant_dir, reuse_embeddings=simple)
    assert _top_ids(simple, QUESTIONS, 3) == _top_ids(qdrant, QUESTIONS, 3)
    assert rag.retrieval_report(qdrant, QUESTIONS, max_k=3).mrr == rag.retrieval_report(simple, QUESTIONS, max_k=3).mrr


def test_qdrant_index_is_updated_and_persisted_only_in_its_own_folder(hashing_embedder, qdrant_dir, tmp_path):
    info = vector_store.build_qdrant_index(ARTICLES, SMALL, qdrant_dir)
    with pytest.raises(CourseError, match="changes a Qdrant collection in place"):
        rag.apply_update(info, [_article("kb-gift", "Gift cards", "Never expire.")], persist_dir=tmp_path / "copy")
    with pytest.raises(CourseError, match="stored in its database"):
        rag.persist(info, tmp_path / "copy")
    assert "kb-gift" not in info.index.ref_doc_info


def test_qdrant_collection_with_another_dimension_is_refused(hashing_embedder, qdrant_dir):
    from qdrant_client.models import Distance, VectorParams

    info = vector_store.build_qdrant_index(ARTICLES, SMALL, qdrant_dir)
    client, name = info.index.vector_store.client, vector_store.collection_name(qdrant_dir)
    client.delete_collection(name)                       # someone refilled it with another embedder's vectors
    client.create_collection(name, vectors_config=VectorParams(size=8, distance=Distance.COSINE))
    with pytest.raises(CourseError, match=r"holds 8-d vectors, but the embedder hashing-64 makes 64-d.*Rebuild"):
        rag.load_index(qdrant_dir)
    client.delete_collection(name)
    with pytest.raises(CourseError, match="has no collection"):
        rag.load_index(qdrant_dir)


def test_qdrant_server_index_needs_the_url(hashing_embedder, qdrant_dir):
    vector_store.build_qdrant_index(ARTICLES, SMALL, qdrant_dir)
    meta_file = qdrant_dir / "ftrag_index.json"
    meta = json.loads(meta_file.read_text())
    meta_file.write_text(json.dumps({**meta, "qdrant_url": "http://localhost:6333"}))
    with pytest.raises(CourseError, match=f"set {vector_store.QDRANT_URL_ENV}=http://localhost:6333"):
        rag.load_index(qdrant_dir)


@pytest.mark.slow
def test_qdrant_matches_the_simple_store_on_every_knowledge_question(cpu_profile, qdrant_dir):
    """The real embedder and all evaluation questions: same chunk ids in the same order (ties: same set)."""
    course = data.load_all()
    rag.configure(cpu_profile)
    simple = rag.build_index(course.kb)
    qdrant = vector_store.build_qdrant_index(course.kb, rag.DEFAULT_CHUNKING, qdrant_dir)  # embeds again
    k = 5
    simple_hits = [rag.Retriever(simple, top_k=k).retrieve(q.question) for q in course.knowledge]
    qdrant_hits = [rag.Retriever(qdrant, top_k=k).retrieve(q.question) for q in course.knowledge]
    for q, a, b in zip(course.knowledge, simple_hits, qdrant_hits):
        scores_a, scores_b = [c.score for c in a], [c.score for c in b]
        assert scores_a == pytest.approx(scores_b, abs=1e-5), q.id
        if [c.node_id for c in a] != [c.node_id for c in b]:   # only where scores tie
            tied = len(set(round(s, 5) for s in scores_a)) < len(scores_a)
            assert tied and {c.node_id for c in a} == {c.node_id for c in b}, q.id

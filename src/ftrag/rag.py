"""Retrieval over Lumio's help centre with llama-index: chunk, embed, index, persist, retrieve, update.

Node ids are ``<article id>-<chunk number>`` (not random UUIDs) so that a retrieved chunk names
its article, and hit@k can be judged against the gold article ids of the evaluation set.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CourseError
from .paths import cache_dir
from .profiles import Profile, load_embedder

PERSIST_FILES = ("docstore.json", "index_store.json", "default__vector_store.json")
#: The ``regions`` metadata of an article that applies to every customer (see :mod:`ftrag.access`).
ALL_REGIONS = "all"


@dataclass(frozen=True)
class ChunkSettings:
    """How articles are cut into chunks. ``splitter="sentence"`` keeps sentences whole;
    ``"token"`` cuts every ``chunk_size`` tokens wherever that falls (the deliberately bad option
    when small and without the title)."""

    chunk_size: int = 256
    chunk_overlap: int = 32
    splitter: str = "sentence"
    with_title: bool = True

    @property
    def label(self) -> str:
        title = "" if self.with_title else ", no title"
        return f"{self.splitter} {self.chunk_size}/{self.chunk_overlap}{title}"

    def fingerprint(self) -> str:
        return f"{self.splitter}-{self.chunk_size}-{self.chunk_overlap}-{int(self.with_title)}"


DEFAULT_CHUNKING = ChunkSettings(chunk_size=128, chunk_overlap=16)
BAD_CHUNKING = ChunkSettings(chunk_size=24, chunk_overlap=0, splitter="token", with_title=False)


@dataclass(frozen=True)
class RetrievedChunk:
    article_id: str
    node_id: str
    score: float
    text: str


# --------------------------------------------------------------------------- set-up


def configure(profile: Profile, *, llm=None, embedder=None):
    """Set llama-index's global models explicitly (it silently falls back to OpenAI otherwise).

    ``llm`` may be a llama-index LLM; without one a :class:`MockLLM` is installed, because the
    course generates answers with :class:`ftrag.generation.Generator` and only retrieves here.
    Returns the embedder so callers can reuse it.
    """
    from llama_index.core import Settings
    from llama_index.core.llms import MockLLM

    Settings.embed_model = embedder or load_embedder(profile)
    Settings.llm = llm or MockLLM(max_tokens=1)
    _QUERY_EMBEDDINGS.clear()
    return Settings.embed_model


# A question asked again (the chunking sweep asks the same 147 questions of five indexes) is embedded
# once: the embedding depends only on the embedding model, which configure() sets (and resets this).
_QUERY_EMBEDDINGS: dict[str, list[float]] = {}


def query_embedding(question: str) -> list[float]:
    from llama_index.core import Settings

    emb = _QUERY_EMBEDDINGS.get(question)
    if emb is None:
        emb = _QUERY_EMBEDDINGS[question] = Settings.embed_model.get_query_embedding(question)
    return emb


def to_documents(articles) -> list:
    """One llama-index Document per article; the id is stable so updates can replace it."""
    from llama_index.core import Document

    docs = []
    for art in articles:
        if not art.body.strip():
            raise CourseError(f"{art.path}: the article body is empty; write its text or delete the file.")
        docs.append(Document(
            text=art.body.strip(), id_=art.id,
            metadata={"article_id": art.id, "title": art.title, "category": art.category,
                      "updated": str(art.updated), "regions": list(getattr(art, "regions", ()) or (ALL_REGIONS,))},
            # the title helps retrieval; ids, dates and regions only add noise to the embedded text
            # (and kept out of both texts, they leave the chunk sizes as they were)
            excluded_embed_metadata_keys=["article_id", "category", "updated", "regions"],
            excluded_llm_metadata_keys=["article_id", "title", "category", "updated", "regions"],
        ))
    return docs


def splitter(chunking: ChunkSettings):
    from llama_index.core.node_parser import SentenceSplitter, TokenTextSplitter

    def id_func(i, doc):
        return f"{doc.doc_id}-{i}"

    if chunking.splitter == "sentence":
        return SentenceSplitter(chunk_size=chunking.chunk_size, chunk_overlap=chunking.chunk_overlap,
                                id_func=id_func)
    if chunking.splitter == "token":
        return TokenTextSplitter(chunk_size=chunking.chunk_size, chunk_overlap=chunking.chunk_overlap,
                                 id_func=id_func)
    raise CourseError(f"Unknown splitter {chunking.splitter!r}; use 'sentence' or 'token'.")


def chunk(articles, chunking: ChunkSettings = DEFAULT_CHUNKING) -> list:
    from .harmless_messages import SPLITTER_NOTICE_TOKENS, splitter_small_chunk_notice_dropped

    docs = to_documents(articles)
    if not chunking.with_title:
        for doc in docs:
            doc.excluded_embed_metadata_keys = list(doc.metadata)
    if chunking.chunk_size >= SPLITTER_NOTICE_TOKENS:
        return splitter(chunking).get_nodes_from_documents(docs)
    with splitter_small_chunk_notice_dropped():  # chunks under 50 tokens, as asked: drop the notice that says so
        return splitter(chunking).get_nodes_from_documents(docs)


# --------------------------------------------------------------------------- build / persist / load


@dataclass
class IndexInfo:
    index: object
    chunking: ChunkSettings
    n_articles: int
    n_chunks: int
    build_seconds: float
    persist_dir: Path | None = None
    cached: bool = False
    # bumped by apply_update, so retrievers that keep their own copy of the chunks (BM25) rebuild it
    revision: int = 0
    # "simple" (llama-index's in-memory store, persisted as JSON) or "qdrant" (ftrag.vector_store)
    vector_store: str = "simple"


def build_index(articles, chunking: ChunkSettings = DEFAULT_CHUNKING, *, progress: bool = False) -> IndexInfo:
    """Chunk, embed and index the articles in memory (call :func:`configure` first)."""
    from llama_index.core import VectorStoreIndex

    _require_configured()
    start = time.perf_counter()
    nodes = chunk(articles, chunking)
    index = VectorStoreIndex(nodes, show_progress=progress)
    return IndexInfo(index, chunking, len(articles), len(nodes), time.perf_counter() - start)


class IndexMismatch(CourseError):
    """A persisted index was built with another embedder or chunking than the one asked for."""


def embedder_fingerprint() -> dict:
    """Name and vector size of the configured embedding model, recorded with every persisted index.

    A local model path is shortened to its last two parts, so the same model installed elsewhere
    matches."""
    from llama_index.core import Settings

    _require_configured()
    name = str(getattr(Settings.embed_model, "model_name", None) or type(Settings.embed_model).__name__)
    return {"name": "/".join(Path(name).parts[-2:]), "dimension": len(query_embedding("dimension probe"))}


def index_meta(info: IndexInfo) -> dict:
    """What ``ftrag_index.json`` records about an index (its fingerprint and sizes)."""
    return {"chunking": info.chunking.fingerprint(), "embedder": embedder_fingerprint(),
            "vector_store": info.vector_store, "n_articles": info.n_articles, "n_chunks": info.n_chunks,
            "build_seconds": info.build_seconds}


def check_fingerprint(meta: dict, persist_dir: Path, chunking: ChunkSettings | None = None) -> ChunkSettings:
    """The stored chunking, after checking that the index matches the configured embedder and, if
    given, the ``chunking`` asked for; a mismatch is an :class:`IndexMismatch` that names the fix."""
    rebuild = (f"delete {persist_dir} and rebuild it (`rag.ensure_index(articles, chunking)` rebuilds a "
               "cached index by itself)")
    stored = meta.get("embedder")
    if stored is None:
        raise IndexMismatch(f"The index in {persist_dir} does not record which embedder built it (it predates "
                            f"fingerprints), so its vectors cannot be trusted to match: {rebuild}.")
    current = embedder_fingerprint()
    if stored != current:
        raise IndexMismatch(
            f"The index in {persist_dir} was built with the embedder {stored['name']} ({stored['dimension']}-d "
            f"vectors), but llama-index is configured with {current['name']} ({current['dimension']}-d): "
            f"questions and chunks would be embedded differently. Either `rag.configure(...)` the profile whose "
            f"embedder built it, or {rebuild}.")
    splitter_name, size, overlap, with_title = meta["chunking"].split("-")
    built = ChunkSettings(int(size), int(overlap), splitter_name, bool(int(with_title)))
    if chunking is not None and chunking != built:
        raise IndexMismatch(
            f"The index in {persist_dir} was chunked as '{built.label}', not '{chunking.label}' as asked. Load the "
            f"folder built for that chunking (`rag.index_dir(articles, chunking)`), or build one with "
            f"`rag.ensure_index(articles, chunking)`.")
    return built


def write_meta(info: IndexInfo, persist_dir: Path, **extra) -> None:
    tmp = Path(persist_dir) / "ftrag_index.json.partial"
    tmp.write_text(json.dumps({**index_meta(info), **extra}))
    tmp.rename(Path(persist_dir) / "ftrag_index.json")


def persist(info: IndexInfo, persist_dir: Path) -> Path:
    """Write the index and its fingerprint to ``persist_dir`` (replacing what was there). A Qdrant
    index lives in its database: it is persisted to its own folder (see :mod:`ftrag.vector_store`)."""
    if info.vector_store != "simple":
        from .vector_store import persist_qdrant

        return persist_qdrant(info, persist_dir)
    persist_dir = Path(persist_dir)
    tmp = persist_dir.with_name(persist_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    info.index.storage_context.persist(persist_dir=str(tmp))
    write_meta(info, tmp)
    shutil.rmtree(persist_dir, ignore_errors=True)
    tmp.rename(persist_dir)
    info.persist_dir = persist_dir
    return persist_dir


def read_meta(persist_dir: Path, required: Sequence[str] = PERSIST_FILES) -> dict:
    """``ftrag_index.json`` of a persisted index, after checking that the folder is complete."""
    missing = [f for f in (*required, "ftrag_index.json") if not (Path(persist_dir) / f).exists()]
    if missing:
        raise CourseError(f"No complete index in {persist_dir} (missing {', '.join(missing)}). Build it with "
                          "`rag.ensure_index(...)` (the RAG lab does), or delete the folder and rebuild.")
    return json.loads((Path(persist_dir) / "ftrag_index.json").read_text())


def load_index(persist_dir: Path, *, chunking: ChunkSettings | None = None) -> IndexInfo:
    """Reload a persisted index; a missing or incomplete folder, or one built with another embedder
    (or another chunking than ``chunking``, when given), gives a clear error."""
    from llama_index.core import StorageContext, load_index_from_storage

    persist_dir = Path(persist_dir)
    meta_file = persist_dir / "ftrag_index.json"
    if meta_file.exists() and json.loads(meta_file.read_text()).get("vector_store", "simple") != "simple":
        from .vector_store import load_qdrant_index

        return load_qdrant_index(persist_dir, chunking=chunking)
    meta = read_meta(persist_dir)
    _require_configured()
    built = check_fingerprint(meta, persist_dir, chunking)
    index = load_index_from_storage(StorageContext.from_defaults(persist_dir=str(persist_dir)))
    return IndexInfo(index, built, meta["n_articles"], meta["n_chunks"], meta["build_seconds"], persist_dir,
                     cached=True)


def kb_fingerprint(articles) -> str:
    h = hashlib.sha256()
    for art in sorted(articles, key=lambda a: a.id):
        h.update(f"{art.id}\n{art.title}\n{art.category}\n{art.updated}\n{art.body}\n".encode())
        if getattr(art, "regions", ()):   # metadata the filters read: an index without it cannot filter
            h.update(f"regions: {', '.join(art.regions)}\n".encode())
    return h.hexdigest()[:12]


def index_dir(articles, chunking: ChunkSettings, name: str = "kb") -> Path:
    return cache_dir() / "indexes" / f"{name}-{chunking.fingerprint()}-{kb_fingerprint(articles)}"


def ensure_index(articles, chunking: ChunkSettings = DEFAULT_CHUNKING, *, name: str = "kb") -> IndexInfo:
    """Load the persisted index for exactly these articles, chunking and embedder, or build and persist it."""
    target = index_dir(articles, chunking, name)
    if (target / "ftrag_index.json").exists():
        try:
            return load_index(target, chunking=chunking)
        except IndexMismatch:
            pass  # built with another embedder (or before fingerprints): a stale cache, rebuilt below
    info = build_index(articles, chunking)
    persist(info, target)
    return info


def _require_configured() -> None:
    from llama_index.core import Settings

    # Settings.embed_model resolves lazily and would try OpenAI: look at the private slot.
    if getattr(Settings, "_embed_model", None) is None:
        raise CourseError("llama-index has no embedding model set; call `rag.configure(profile)` first "
                          "(otherwise it falls back to OpenAI, which needs a key and the internet).")


# --------------------------------------------------------------------------- retrieval


class Retriever:
    """Top-k retrieval returning chunks with their article ids and scores.

    ``filters`` (llama-index ``MetadataFilters``, dense mode only) are applied by the vector store
    before ranking: see :mod:`ftrag.access`.

    ``mode="dense"`` ranks by cosine similarity of embeddings (the score is the cosine);
    ``"bm25"`` by keyword overlap (the score is BM25's); ``"hybrid"`` fuses the ``fusion_depth`` best
    of both by reciprocal rank fusion (the score is the fused one, see :mod:`ftrag.hybrid_retrieval`).
    """

    def __init__(self, info: IndexInfo, top_k: int = 3, *, mode: str = "dense", fusion_depth: int | None = None,
                 filters=None):
        from . import hybrid_retrieval as hybrid

        self.info = info
        self.top_k = top_k
        self.mode = hybrid.check_mode(mode)
        if filters is not None and self.mode != "dense":
            raise CourseError(f"Metadata filters work on the vector store only; use mode='dense', not {mode!r} "
                              "(the BM25 keyword index does not read metadata).")
        self.filters = filters
        self.fusion_depth = max(top_k, fusion_depth or hybrid.FUSION_DEPTH) if mode == "hybrid" else top_k
        self._retriever = info.index.as_retriever(similarity_top_k=self.fusion_depth, filters=filters)
        self._keywords = hybrid.KeywordIndex(info) if mode != "dense" else None

    def retrieve(self, question: str) -> list[RetrievedChunk]:
        from llama_index.core.schema import QueryBundle

        from .hybrid_retrieval import fuse_hits

        if self.mode == "bm25":
            hits = self._keywords.search(question, self.top_k)
        else:
            hits = self._retriever.retrieve(QueryBundle(query_str=question, embedding=query_embedding(question)))
            if self.mode == "hybrid":
                hits = fuse_hits(hits, self._keywords.search(question, self.fusion_depth), self.top_k)
        return [RetrievedChunk(h.node.ref_doc_id or h.node.metadata.get("article_id", "?"), h.node.node_id,
                               float(h.score or 0.0), h.node.get_content()) for h in hits]

    def retrieve_many(self, questions: Sequence[str]) -> tuple[list[list[RetrievedChunk]], list[float]]:
        """Retrieve for each question; also returns the seconds each retrieval took."""
        out, seconds = [], []
        for q in questions:
            t0 = time.perf_counter()
            out.append(self.retrieve(q))
            seconds.append(time.perf_counter() - t0)
        return out, seconds


def passages(chunks: Sequence[RetrievedChunk]) -> list[tuple[str, str]]:
    """Chunks as ``(article id, text)`` pairs for :func:`ftrag.prompts.chat`."""
    return [(c.article_id, c.text) for c in chunks]


# --------------------------------------------------------------------------- retrieval metrics


@dataclass
class RetrievalReport:
    """hit@k for k = 1..max_k and MRR at article level, over a question set."""

    hit_at: dict[int, float]
    mrr: float
    n_questions: int
    chunking_label: str = ""
    first_gold_rank: list[int | None] = field(default_factory=list)


def report_from_ranks(ranks: Sequence[int | None], max_k: int = 10, label: str = "") -> RetrievalReport:
    """hit@k and MRR from the rank of the first gold chunk per question (``None``: not in the top max_k)."""
    if not ranks:
        raise CourseError("No questions to measure retrieval on; pass at least one question.")
    n = len(ranks)
    hit_at = {k: sum(1 for r in ranks if r is not None and r <= k) / n for k in range(1, max_k + 1)}
    mrr = sum(1 / r for r in ranks if r is not None) / n
    return RetrievalReport(hit_at, mrr, n, label, list(ranks))


def retrieval_report(info: IndexInfo, questions, *, max_k: int = 10, mode: str = "dense") -> RetrievalReport:
    """Rank of the first chunk from a gold article for each question (``question.article_ids``),
    retrieving with :class:`Retriever` in the given ``mode``."""
    known = set(info.index.ref_doc_info)
    for q in questions:
        unknown = [a for a in q.article_ids if a not in known]
        if unknown:
            raise CourseError(f"Question {q.id} names gold article(s) {unknown} that are not in the index; "
                              "fix data/eval or rebuild the index from the right knowledge base.")
    retriever = Retriever(info, top_k=max_k, mode=mode)
    ranks: list[int | None] = []
    for q in questions:
        gold = set(q.article_ids)
        chunks = retriever.retrieve(q.question)
        ranks.append(next((r for r, c in enumerate(chunks, 1) if c.article_id in gold), None))
    return report_from_ranks(ranks, max_k, info.chunking.label)


def chunking_sweep(articles, questions, settings: Sequence[ChunkSettings], *, max_k: int = 10):
    """One index per chunking (persisted, so a re-run loads it) measured on the questions;
    returns a list of (IndexInfo, report). ``IndexInfo.build_seconds`` is from the first build."""
    rows = []
    for chunking in settings:
        info = ensure_index(articles, chunking)
        rows.append((info, retrieval_report(info, questions, max_k=max_k)))
    return rows


# --------------------------------------------------------------------------- knowledge update


@dataclass
class UpdateReport:
    replaced: list[str]
    added: list[str]
    seconds: float


def apply_update(info: IndexInfo, updates, *, persist_dir: Path | None = None) -> UpdateReport:
    """Absorb changed or new articles into the index in place: re-embed only what changed, no retraining.

    An update whose id is in the index replaces that article: its chunks are deleted
    (``delete_ref_doc``) and the update's chunks, cut with the index's own chunking, are embedded and
    inserted (``insert_nodes``); an update with a new id is only inserted. ``info.n_articles`` is
    recounted (``info.n_chunks`` keeps the build's count) and ``info.revision`` goes up by one, so
    retrievers that keep their own copy of the chunks (BM25 in :mod:`ftrag.hybrid_retrieval`) rebuild it.

    Simple (in-memory) index: with ``persist_dir`` the updated index is written there and
    ``info.persist_dir`` points to it (the folder it was loaded from is left as it was); without it
    nothing is written. Qdrant index: the collection is changed in its database, so the update is
    always persisted to the index's own folder; another ``persist_dir`` raises :class:`CourseError`
    (:func:`ftrag.vector_store.check_update_target`).

    The report's ``seconds`` times the change itself (delete, chunk, embed, insert), not the write.
    """
    if info.vector_store != "simple":
        from .vector_store import check_update_target

        persist_dir = check_update_target(info, persist_dir)
    start = time.perf_counter()
    index = info.index
    existing = set(index.ref_doc_info)
    ids = [u.id for u in updates]
    replaced = [i for i in ids if i in existing]
    added = [i for i in ids if i not in existing]
    for doc_id in replaced:
        index.delete_ref_doc(doc_id, delete_from_docstore=True)
    # chunk the updates exactly like the original build, then embed and insert only those chunks
    index.insert_nodes(chunk(updates, info.chunking))
    info.n_articles = len(index.ref_doc_info)
    info.revision += 1
    seconds = time.perf_counter() - start
    if persist_dir is not None:
        persist(info, Path(persist_dir))
    return UpdateReport(replaced, added, seconds)

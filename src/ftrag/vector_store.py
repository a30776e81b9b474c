"""A real vector database behind :class:`ftrag.rag.Retriever`: Qdrant, through llama-index's
``QdrantVectorStore``.

By default Qdrant runs *embedded* (``QdrantClient(path=...)``): no server, the collection lives in
``<persist_dir>/qdrant`` and only one process at a time may open it. Set ``FTRAG_QDRANT_URL``
(e.g. ``http://localhost:6333`` after ``docker run -p 6333:6333 qdrant/qdrant``) and the same code
builds the collection on that server instead. Either way ``<persist_dir>`` also holds llama-index's
docstore (the chunks' text, which BM25 and the update need) and ``ftrag_index.json``, the fingerprint
that :func:`ftrag.rag.load_index` checks.

Embedded mode searches exhaustively (it compares the question with every stored vector, like the
simple store); a Qdrant server builds an HNSW graph once a collection is large enough.
"""
from __future__ import annotations

import atexit
import copy
import os
import re
import time
import uuid
from pathlib import Path

from . import rag
from .errors import CourseError

QDRANT_URL_ENV = "FTRAG_QDRANT_URL"
QDRANT_SUBDIR = "qdrant"
STORE_FILES = ("docstore.json", "index_store.json")
# Qdrant point ids must be UUIDs or integers; chunk ids ("kb-halo-0") map to a fixed UUID each.
_POINT_NAMESPACE = uuid.UUID("6f1d4c52-7a0e-4d8e-9a43-1f3c2b9e5d10")
_CLIENTS: dict[str, object] = {}


def point_id(node_id: str) -> str:
    return str(uuid.uuid5(_POINT_NAMESPACE, node_id))


def collection_name(persist_dir: Path) -> str:
    """The collection that holds the index persisted in ``persist_dir`` (named after the folder)."""
    return "ftrag-" + re.sub(r"[^A-Za-z0-9_-]+", "-", Path(persist_dir).resolve().name)


def server_url() -> str | None:
    return os.environ.get(QDRANT_URL_ENV) or None


def client_for(persist_dir: Path, *, url: str | None = None):
    """The Qdrant client for an index: the server at ``url`` if given, else embedded Qdrant on disk in
    ``<persist_dir>/qdrant``. Clients are reused within a process (embedded storage allows one)."""
    from qdrant_client import QdrantClient

    key = url or str((Path(persist_dir) / QDRANT_SUBDIR).resolve())
    if key not in _CLIENTS:
        try:
            if url:
                _CLIENTS[key] = QdrantClient(url=url)
            else:
                Path(key).mkdir(parents=True, exist_ok=True)
                _CLIENTS[key] = QdrantClient(path=key)
        except RuntimeError as exc:
            if "already accessed" not in str(exc):
                raise
            raise CourseError(f"Another process has the embedded Qdrant store in {key} open (only one may): "
                              f"close that notebook or script, or run a Qdrant server and set {QDRANT_URL_ENV}."
                              ) from exc
    return _CLIENTS[key]


def close_client(persist_dir: Path) -> None:
    """Close the embedded client of ``persist_dir`` so another process (or a fresh load) can open it."""
    client = _CLIENTS.pop(str((Path(persist_dir) / QDRANT_SUBDIR).resolve()), None)
    if client is not None:
        client.close()


@atexit.register
def _close_all() -> None:
    # closing at exit, not in the client's __del__ (which fails once Python is shutting down)
    while _CLIENTS:
        _CLIENTS.popitem()[1].close()


def _store(client, name: str, *, server: bool):
    from llama_index.vector_stores.qdrant import QdrantVectorStore

    class ChunkIdQdrantStore(QdrantVectorStore):
        """Stores each chunk under :func:`point_id` of its id; the chunk id itself stays in the payload."""

        def _build_points(self, nodes, sparse_vector_name):
            points, ids = super()._build_points(nodes, sparse_vector_name)
            for point in points:
                point.id = point_id(point.id)
            return points, ids

        def _build_query_filter(self, query):
            # llama-index restricts every query to the index's chunk ids; Qdrant knows them as point ids
            if query.node_ids:
                query = copy.copy(query)
                query.node_ids = [point_id(i) for i in query.node_ids]
            return super()._build_query_filter(query)

        def delete_nodes(self, node_ids=None, filters=None, **kwargs):
            ids = None if node_ids is None else [point_id(i) for i in node_ids]
            return super().delete_nodes(ids, filters, **kwargs)

    # a payload index on the article id speeds up deletes on a server; embedded Qdrant ignores it
    return ChunkIdQdrantStore(collection_name=name, client=client, index_doc_id=server)


def collection_dimension(client, name: str) -> int:
    """Size of the dense vectors in collection ``name``."""
    vectors = client.get_collection(name).config.params.vectors
    if isinstance(vectors, dict):
        vectors = next(iter(vectors.values()))
    return int(vectors.size)


def check_collection_dimension(client, name: str, where: str) -> None:
    """A collection whose vectors are not the configured embedder's size is a :class:`CourseError`."""
    if not client.collection_exists(name):
        raise CourseError(f"Qdrant has no collection {name!r} ({where}); rebuild the index with "
                          "`vector_store.build_qdrant_index(articles, chunking, persist_dir)`.")
    have, embedder = collection_dimension(client, name), rag.embedder_fingerprint()
    if have != embedder["dimension"]:
        raise CourseError(
            f"The Qdrant collection {name!r} ({where}) holds {have}-d vectors, but the embedder "
            f"{embedder['name']} makes {embedder['dimension']}-d ones, so nothing in it can be compared with a "
            f"question. Rebuild it with this embedder (`vector_store.build_qdrant_index(...)` replaces the "
            f"collection), or configure the profile whose embedder filled it.")


def build_qdrant_index(articles, chunking: rag.ChunkSettings = rag.DEFAULT_CHUNKING, persist_dir: Path | None = None,
                       *, reuse_embeddings: rag.IndexInfo | None = None, progress: bool = False) -> rag.IndexInfo:
    """Chunk and embed like :func:`ftrag.rag.build_index`, but store the vectors in Qdrant (replacing
    any collection of the same name) and persist the docstore and fingerprint to ``persist_dir``
    (default: the cache folder for these articles and chunking). Call ``rag.configure`` first.

    ``reuse_embeddings``: an index built with the same embedder and chunking (e.g. the simple store);
    every chunk whose id and text it holds takes its vector from there instead of being embedded
    again, which is how an existing index moves into a database without re-embedding."""
    from llama_index.core import StorageContext, VectorStoreIndex

    rag._require_configured()
    persist_dir = Path(persist_dir or rag.index_dir(articles, chunking, name="kb-qdrant"))
    persist_dir.mkdir(parents=True, exist_ok=True)
    (persist_dir / "ftrag_index.json").unlink(missing_ok=True)  # incomplete until persisted below
    url, name = server_url(), collection_name(persist_dir)
    client = client_for(persist_dir, url=url)
    if client.collection_exists(name):
        client.delete_collection(name)
    start = time.perf_counter()
    nodes = rag.chunk(articles, chunking)
    if reuse_embeddings is not None:
        copy_embeddings(reuse_embeddings, nodes)
    storage = StorageContext.from_defaults(vector_store=_store(client, name, server=url is not None))
    # store_nodes_override: keep the chunks in the docstore too (BM25 and the update read them from there)
    index = VectorStoreIndex(nodes, storage_context=storage, store_nodes_override=True, show_progress=progress)
    info = rag.IndexInfo(index, chunking, len(articles), len(nodes), time.perf_counter() - start,
                         persist_dir, vector_store="qdrant")
    persist_qdrant(info, persist_dir)
    return info


def copy_embeddings(source: rag.IndexInfo, nodes) -> int:
    """Give each node the vector ``source`` holds for the same chunk id and text; returns how many
    were copied (the others, e.g. after a change of chunking, are embedded as usual)."""
    if source.vector_store != "simple":
        raise CourseError("Embeddings can only be reused from a simple (in-memory) index; build without "
                          "reuse_embeddings.")
    store, docs = source.index.vector_store, source.index.docstore
    copied = 0
    for node in nodes:
        old = docs.get_node(node.node_id, raise_error=False)
        if old is not None and old.get_content(metadata_mode="embed") == node.get_content(metadata_mode="embed"):
            node.embedding = store.get(node.node_id)
            copied += 1
    return copied


def persist_qdrant(info: rag.IndexInfo, persist_dir: Path) -> Path:
    """Write the docstore and fingerprint of a Qdrant index next to its collection. The vectors are
    already in the database, so the only folder it can be persisted to is its own."""
    persist_dir = Path(persist_dir)
    if info.persist_dir is None or persist_dir.resolve() != Path(info.persist_dir).resolve():
        raise CourseError(f"A Qdrant index is stored in its database and belongs to {info.persist_dir}; persist it "
                          f"there, or build a separate one in {persist_dir} with `vector_store.build_qdrant_index`.")
    info.index.storage_context.persist(persist_dir=str(persist_dir))
    rag.write_meta(info, persist_dir, collection=collection_name(persist_dir),
                   qdrant_url=_server_url_of(info))
    return persist_dir


def _server_url_of(info: rag.IndexInfo) -> str | None:
    """The server URL the index's client talks to (None for embedded Qdrant)."""
    client = info.index.vector_store.client
    return next((key for key, known in _CLIENTS.items() if known is client and "://" in key), None)


def load_qdrant_index(persist_dir: Path, *, chunking: rag.ChunkSettings | None = None) -> rag.IndexInfo:
    """Reopen a persisted Qdrant index (what :func:`ftrag.rag.load_index` calls for one), after checking
    the fingerprint and that the collection's vectors have the embedder's dimension."""
    from llama_index.core import StorageContext, load_index_from_storage

    persist_dir = Path(persist_dir)
    meta = rag.read_meta(persist_dir, STORE_FILES)
    rag._require_configured()
    built = rag.check_fingerprint(meta, persist_dir, chunking)
    url = meta.get("qdrant_url")
    if url and server_url() is None:
        raise CourseError(f"The index in {persist_dir} lives on the Qdrant server {url}; start it and set "
                          f"{QDRANT_URL_ENV}={url}, or rebuild the index in embedded mode without that variable.")
    url = server_url() if url else None
    client, name = client_for(persist_dir, url=url), meta["collection"]
    check_collection_dimension(client, name, f"for {persist_dir}")
    store = _store(client, name, server=url is not None)
    storage = StorageContext.from_defaults(persist_dir=str(persist_dir), vector_store=store)
    index = load_index_from_storage(storage, store_nodes_override=True)
    return rag.IndexInfo(index, built, meta["n_articles"], meta["n_chunks"], meta["build_seconds"], persist_dir,
                         cached=True, vector_store="qdrant")


def check_update_target(info: rag.IndexInfo, persist_dir: Path | None) -> Path:
    """Where :func:`ftrag.rag.apply_update` writes a Qdrant index after changing it: its own folder."""
    if persist_dir is not None and Path(persist_dir).resolve() != Path(info.persist_dir).resolve():
        raise CourseError(f"An update changes a Qdrant collection in place, so its copy in {info.persist_dir} cannot "
                          f"be kept apart from the update. Call apply_update without persist_dir (or with "
                          f"{info.persist_dir}); for a separate updated copy, build one with "
                          "`vector_store.build_qdrant_index` in another folder and update that.")
    return Path(info.persist_dir)

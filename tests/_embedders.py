"""A tiny, deterministic embedding model for tests that need vectors but not meaning: each word is
hashed into one of ``dim`` buckets. Questions that share words with a chunk land near it, so
retrieval on the test articles behaves, and nothing is loaded from disk."""
import re
import zlib

import pytest
from llama_index.core.base.embeddings.base import BaseEmbedding

from ftrag import rag


class HashingEmbedding(BaseEmbedding):
    dim: int = 64

    def __init__(self, dim: int = 64, **kwargs):
        super().__init__(dim=dim, model_name=f"hashing-{dim}", **kwargs)

    def _vector(self, text: str) -> list[float]:
        vec = [0.0] * self.dim
        for word in re.findall(r"\w+", text.lower()):
            vec[zlib.crc32(word.encode()) % self.dim] += 1.0
        norm = sum(v * v for v in vec) ** 0.5 or 1.0
        return [v / norm for v in vec]

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._vector(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._vector(text)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._vector(query)


@pytest.fixture
def hashing_embedder(cpu_profile):
    """Configure llama-index with a 64-d hashing embedder for one test, then restore what was set."""
    from llama_index.core import Settings

    saved = Settings._embed_model, Settings._llm
    rag.configure(cpu_profile, embedder=HashingEmbedding(64))
    yield Settings.embed_model
    Settings._embed_model, Settings._llm = saved
    rag._QUERY_EMBEDDINGS.clear()

"""A reader with no language model: the retrieved sentence closest in meaning to the question.

A diagnostic, not an assistant. It takes the same retrieved chunks as the RAG system, splits them into
sentences, embeds each with the profile's embedder (``Settings.embed_model``, the model that built the
index) and returns the sentence whose embedding is closest to the question's. It writes no JSON, has no
voice and never hands off; it generates nothing, so it takes milliseconds.

What it answers is the question lab 1 asks of the RAG system's failures: was the fact in the prompt and the
model lost it, or was it never retrieved? Where the closest sentence states the gold value and the model's
reply does not, the context held the answer and the 135M model did not copy it out.

Nothing here is tuned: the chunks come from the profile's retriever (``retrieval_top_k`` was chosen on
the dev split for the RAG system) and the sentence rule below was fixed before any measurement.
"""
from __future__ import annotations

import re
import time
from collections.abc import Sequence

from . import evaluate
from .generation import Generation
from .rag import Retriever

#: A sentence ends at ., ! or ? followed by white space, or at a line break (list items, headings).
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
#: Shorter pieces are list markers or stray punctuation, not sentences.
MIN_SENTENCE_CHARS = 4


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text``, in order, stripped; pieces shorter than ``MIN_SENTENCE_CHARS`` dropped."""
    return [s.strip() for s in _SENTENCE_END.split(text) if len(s.strip()) >= MIN_SENTENCE_CHARS]


def closest(question_vector: Sequence[float], sentence_vectors: Sequence[Sequence[float]]) -> int:
    """Index of the sentence vector with the largest dot product with the question's (the embedder's
    vectors are normalised, so this is cosine similarity); the first on a tie."""
    import numpy as np

    if not len(sentence_vectors):
        raise ValueError("no sentences to choose from")
    return int(np.argmax(np.asarray(sentence_vectors) @ np.asarray(question_vector)))


class SentenceReader:
    """Answers ``(question_id, question)`` pairs with the closest retrieved sentence, as
    :class:`ftrag.systems.Answer` objects, so :func:`ftrag.systems.score` scores it like every system.

    ``embed_model`` defaults to llama-index's ``Settings.embed_model`` (set by :func:`ftrag.rag.configure`).
    """

    name = "sentence_pick"
    uses_retrieval = True

    def __init__(self, retriever: Retriever, embed_model=None):
        self.retriever = retriever
        self.embed_model = embed_model

    def _embedder(self):
        if self.embed_model is None:
            from llama_index.core import Settings

            self.embed_model = Settings.embed_model
        return self.embed_model

    def ask(self, items: Sequence[tuple[str, str]]):
        from .systems import Answer

        embedder = self._embedder()
        questions = [q for _, q in items]
        retrieved, seconds = self.retriever.retrieve_many(questions)
        answers = []
        for (question_id, question), chunks, retrieval_s in zip(items, retrieved, seconds):
            start = time.perf_counter()
            sentences = [s for chunk in chunks for s in split_sentences(chunk.text)]
            text = ""
            if sentences:
                pick = closest(embedder.get_query_embedding(question), embedder.get_text_embedding_batch(sentences))
                text = sentences[pick]
            elapsed = time.perf_counter() - start
            reply = Generation(text, prompt_tokens=0, new_tokens=0, seconds=elapsed, batch_seconds=elapsed)
            answers.append(Answer(question_id, question, reply, evaluate.parse_reply(text), tuple(chunks), retrieval_s))
        return answers


def missed_by_the_model(picked, model_answers, picked_scores, model_scores, *, limit: int | None = None):
    """The questions where the closest retrieved sentence was correct and the model's reply to the same
    question was not (both scored by :func:`ftrag.systems.score` on the same questions in the same
    order): a wrapped table of question, sentence and reply, at most ``limit`` rows."""
    from .systems import wrapped_table

    if picked_scores.knowledge_ids != model_scores.knowledge_ids:
        raise ValueError("the reader and the model were not scored on the same questions in the same order")
    rows = [{"question": p.question, "closest sentence": p.text, "model's reply": m.parsed.raw}
            for p, m, p_ok, m_ok in zip(picked, model_answers, picked_scores.correct, model_scores.correct)
            if p_ok and not m_ok]
    return wrapped_table(rows[:limit], ["question", "closest sentence", "model's reply"]) if rows else None

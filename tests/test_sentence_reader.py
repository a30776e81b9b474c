"""The reader with no language model: splits retrieved chunks into sentences and returns the one closest
to the question, scored by the same harness as every system."""
import pytest

from ftrag import sentence_reader, systems
from ftrag.data import KnowledgeQuestion
from ftrag.rag import RetrievedChunk


def test_split_sentences_at_stops_and_line_breaks_dropping_stray_pieces():
    text = "Lumio Plus costs $4.99 a month. It includes cloud backup!\n- a\nReturns: 30 days?  Yes."
    assert sentence_reader.split_sentences(text) == [
        "Lumio Plus costs $4.99 a month.", "It includes cloud backup!", "Returns: 30 days?", "Yes."]


def test_closest_takes_the_largest_dot_product_and_refuses_no_sentences():
    assert sentence_reader.closest([1.0, 0.0], [[0.2, 0.9], [0.8, 0.1], [0.7, 0.7]]) == 1
    with pytest.raises(ValueError, match="no sentences"):
        sentence_reader.closest([1.0, 0.0], [])


class _Embedder:
    """Bag of words over a tiny vocabulary: enough to make one sentence clearly closest."""
    VOCAB = ("price", "plus", "$4.99", "backup", "returns", "days")

    def _vector(self, text):
        words = text.lower().replace("?", "").replace(".", "").split()
        return [float(sum(w.startswith(v.rstrip("s")) for w in words)) for v in self.VOCAB]

    def get_query_embedding(self, text):
        return self._vector(text)

    def get_text_embedding_batch(self, texts):
        return [self._vector(t) for t in texts]


class _Retriever:
    def __init__(self, chunks):
        self.chunks = chunks

    def retrieve_many(self, questions):
        return [self.chunks[q] for q in questions], [0.01] * len(questions)


def test_the_reader_answers_with_the_closest_retrieved_sentence_and_is_scored_like_a_system():
    plus = RetrievedChunk("kb-plus", "kb-plus-0", 0.8, "Backup is included. The Plus price is $4.99 a month.")
    returns = RetrievedChunk("kb-returns", "kb-returns-0", 0.7, "Send it back within 30 days. Backup stays on.")
    reader = sentence_reader.SentenceReader(
        _Retriever({"plus price?": [plus], "returns days?": [returns], "nothing?": []}), embed_model=_Embedder())
    answers = reader.ask([("k1", "plus price?"), ("k2", "returns days?"), ("k3", "nothing?")])
    assert [a.text for a in answers] == ["The Plus price is $4.99 a month.", "Send it back within 30 days.", ""]
    assert answers[0].retrieved_ids == ("kb-plus",) and answers[0].reply.new_tokens == 0
    questions = [KnowledgeQuestion(id=i, question=q, answers=(gold,), article_ids=(art,), changes_after_update=False,
                                   updated_answers=(), updated_article_ids=())
                 for i, q, gold, art in (("k1", "plus price?", "$4.99", "kb-plus"),
                                         ("k2", "returns days?", "30 days", "kb-returns"),
                                         ("k3", "nothing?", "blue", "kb-colour"))]
    scores = systems.score("sentence_pick", answers, questions)
    assert scores.correct == [1.0, 1.0, 0.0] and scores.valid == [0.0, 0.0, 0.0]  # no JSON: it is no assistant


def test_missed_by_the_model_lists_what_the_sentence_got_and_the_reply_did_not():
    from ftrag import evaluate
    from ftrag.generation import Generation

    def answer(qid, text):
        return systems.Answer(qid, f"{qid}?", Generation(text, 0, 0, 0.0, 0.0), evaluate.parse_reply(text))

    picked = [answer("k1", "It costs $4.99."), answer("k2", "Within 30 days."), answer("k3", "Blue.")]
    model = [answer("k1", "It costs $9."), answer("k2", "30 days."), answer("k3", "Red.")]
    pick_scores, model_scores = systems.Scores("pick", knowledge_ids=["k1", "k2", "k3"], correct=[1.0, 1.0, 0.0]), \
        systems.Scores("model", knowledge_ids=["k1", "k2", "k3"], correct=[0.0, 1.0, 0.0])
    table = sentence_reader.missed_by_the_model(picked, model, pick_scores, model_scores)
    assert table.data.to_dict("records") == [
        {"question": "k1?", "closest sentence": "It costs $4.99.", "model's reply": "It costs $9."}]
    assert sentence_reader.missed_by_the_model(picked, model, model_scores, model_scores) is None
    with pytest.raises(ValueError, match="same questions"):
        sentence_reader.missed_by_the_model(picked, model, pick_scores, systems.Scores("m", knowledge_ids=["k1"]))

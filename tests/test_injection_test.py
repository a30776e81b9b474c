"""The controlled injection test: same questions, same facts, three systems, one harness."""
import re

import pytest
from _embedders import hashing_embedder  # noqa: F401 - fixture

from ftrag import injection_test, prompts, systems
from ftrag.data import InjectFact, InjectFactQuestion, load_all
from ftrag.errors import CourseError
from ftrag.generation import Generation

FACTS = [InjectFact("fact-01", "The Halo's internal codename is Firefly."),
         InjectFact("fact-02", "The Reno warehouse uses 12 packing robots."),
         InjectFact("fact-03", "Lumio's office dog is a beagle named Pixel.")]
ANSWERS = {"fact-01": ("Firefly",), "fact-02": ("12",), "fact-03": ("Pixel",)}
WORDING = {"fact-01": ["What is the Halo codename?", "Which internal codename has the Halo?"],
           "fact-02": ["How many packing robots in the Reno warehouse?", "Reno warehouse packing robots: how many?"],
           "fact-03": ["What is the office dog called, the beagle?", "Name of the beagle office dog?"]}


def _questions(copies: int = 7) -> list[InjectFactQuestion]:
    out = []
    for fact_id, wordings in WORDING.items():
        for i in range(copies):
            out.append(InjectFactQuestion(f"{fact_id}-q{i}", fact_id, f"{wordings[i % 2]} ({i})", ANSWERS[fact_id]))
    return out


class Reader:
    """A stand-in model: repeats the first passage of its prompt, or says a fixed guess without one."""

    def __init__(self, guess="It is Lighthouse."):
        self.guess = guess

    def generate(self, conversations, desc=None, max_new_tokens=None):
        out = []
        for conv in conversations:
            passage = re.search(r"^\[([^\]]+)\] (.+)$", conv[-1]["content"], re.M)
            text = passage.group(2) if passage else self.guess
            out.append(Generation(prompts.answer_json(text, [passage.group(1)] if passage else []), 50, 10, 0.1, 0.1))
        return out


def test_fact_documents_are_named_by_their_fact_and_hold_only_the_statement():
    docs = injection_test.fact_documents(FACTS)
    assert [d.doc_id for d in docs] == ["fact-01", "fact-02", "fact-03"]
    assert docs[0].get_content(metadata_mode="embed") == FACTS[0].statement
    with pytest.raises(CourseError, match="fact-09 is empty"):
        injection_test.fact_documents([InjectFact("fact-09", "  ")])


def test_check_questions_refuses_a_set_too_small_to_compare():
    assert injection_test.check_questions(_questions(14)) == {f: 14 for f in WORDING}
    with pytest.raises(CourseError, match="at least 40 questions .* got 21 over 3 facts"):
        injection_test.check_questions(_questions(7))
    one_each = [InjectFactQuestion(f"q{i}", f"fact-{i:02d}", "?", ("x",)) for i in range(45)]
    with pytest.raises(CourseError, match="fact-00, fact-01"):
        injection_test.check_questions(one_each)


def test_compare_asks_every_system_the_same_questions(hashing_embedder):
    from llama_index.core import VectorStoreIndex

    index = VectorStoreIndex.from_documents(injection_test.fact_documents(FACTS))
    retriever = injection_test.retriever(index, top_k=1)
    assert retriever.retrieve(WORDING["fact-02"][0])[0].article_id == "fact-02"
    questions = _questions(14)
    result = injection_test.compare({"base": systems.System("base", Reader()),
                                     "rag": systems.System("rag", Reader(), retriever)}, questions)
    assert result.n_questions == 42 and result.n_facts == 3
    assert [a.question_id for a in result.answers["rag"]] == [q.id for q in questions]
    base, rag = result.rate("base"), result.rate("rag")
    assert base[0] == 0.0 and base[1] == 0.0 < base[2]          # a wrong guess every time, with its interval
    own = result.scores["rag"].retrieved_gold
    assert rag[0] == sum(own) / len(own) > 0.5                    # right exactly when it retrieved its fact
    assert rag[1] < rag[0] <= rag[2]
    test = result.paired("rag", "base")
    assert (test.a_only, test.b_only) == (sum(own), 0) and test.p_value < 1e-6
    assert result.verdict("rag", "base").startswith("the 95% intervals of rag (")
    assert "do not overlap: rag answered more of the same 42 questions right" in result.verdict("rag", "base")
    same = injection_test.compare({"a": systems.System("a", Reader("Firefly")),
                                   "b": systems.System("b", Reader("Pixel"))}, questions)   # 14 right each
    assert same.verdict("a", "b").endswith(" overlap, so on 42 questions the intervals alone do not separate them "
                                           "(14 questions only a got right and 14 only b got right, McNemar p = 1)")
    table = result.table()
    assert list(table.index) == ["base", "rag"] and table.loc["base", "own fact retrieved"] == "n/a"


def test_every_trained_fact_has_a_statement_and_enough_paraphrases():
    course = load_all()
    facts = {f.fact_id for f in course.inject_facts}
    assert facts == {ex.fact_id for ex in course.inject_train}
    per_fact = injection_test.check_questions(course.inject_test)
    assert set(per_fact) == facts and min(per_fact.values()) >= 4

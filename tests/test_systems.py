from dataclasses import dataclass

from ftrag import evaluate, prompts, systems
from ftrag.data import KnowledgeQuestion
from ftrag.generation import Generation
from ftrag.rag import RetrievedChunk


def _answer(qid, raw, retrieved=(), prompt_tokens=100):
    return systems.Answer(qid, "q?", Generation(raw, prompt_tokens, 10, 0.5, 4.0), evaluate.parse_reply(raw),
                          tuple(RetrievedChunk(a, f"{a}-0", 0.9, "text") for a in retrieved), 0.01)


QUESTIONS = [
    KnowledgeQuestion(id="k1", question="price?", answers=("$4.99",), article_ids=("kb-plus",),
                      changes_after_update=True, updated_answers=("$5.99",), updated_article_ids=("kb-plus",)),
    KnowledgeQuestion(id="k2", question="days?", answers=("30 days",), article_ids=("kb-returns",),
                      changes_after_update=False, updated_answers=(), updated_article_ids=()),
]


def test_scores_count_accuracy_citations_validity_and_handoffs():
    knowledge = [
        _answer("k1", prompts.answer_json("It is $4.99 for you. Stay bright!", ["kb-plus"]), ["kb-plus", "kb-pro"]),
        _answer("k2", "Returns take 14 days.", ["kb-returns"]),     # prose, wrong; cites retrieved article
    ]
    unanswerable = [_answer("u1", prompts.answer_json(prompts.HANDOFF_ANSWER, [], True)),
                    _answer("u2", "The CEO is Ada.")]
    s = systems.score("x", knowledge, QUESTIONS, unanswerable).summary()
    assert s["knowledge_accuracy"] == 0.5
    assert s["citation_accuracy"] == 0.5          # only the valid reply's own sources count
    assert s["gold_retrieved"] == 1.0             # ... while retrieval found the gold article both times
    assert s["confident_wrong"] == 0.5            # the prose "14 days" is wrong and not a hand-off
    assert s["schema_validity"] == 0.5            # 2 of 4 replies are schema JSON
    assert s["refusal_accuracy"] == 0.5
    assert s["answer_rate_when_retrieved"] == 1.0
    assert s["prompt_tokens"] == 100


def test_invalid_reply_cites_nothing_even_when_retrieval_found_the_gold_article():
    prose = _answer("k1", "It is $4.99. [kb-plus]", ["kb-plus"])
    assert prose.sources == () and prose.retrieved_ids == ("kb-plus",)
    assert not systems.cites_gold(prose, ["kb-plus"])


def test_one_handoff_rule_for_valid_and_invalid_replies():
    worded_unflagged = _answer("u", prompts.answer_json(prompts.HANDOFF_ANSWER, [], False))
    flagged = _answer("u", prompts.answer_json("Let me check.", [], True))
    prose = _answer("u", "I don't have that information, so I'm passing you to a teammate.")
    assert all(systems.is_handoff(a) for a in (worded_unflagged, flagged, prose))
    assert not systems.is_handoff(_answer("u", prompts.answer_json("It costs $10.", [], False)))


def test_handing_everything_off_scores_zero_answer_rate():
    handoff = prompts.answer_json(prompts.HANDOFF_ANSWER, [], True)
    knowledge = [_answer("k1", handoff, ["kb-plus"]), _answer("k2", handoff, ["kb-other"])]
    s = systems.score("x", knowledge, QUESTIONS, [_answer("u1", handoff)]).summary()
    assert s["refusal_accuracy"] == 1.0 and s["answer_rate_when_retrieved"] == 0.0   # k2: gold not retrieved
    assert s["confident_wrong"] == 0.0


def test_two_prices_for_one_price_question_is_wrong():
    both = _answer("k1", "The Plus plan is $4.99 a month or $49 a year.")
    assert not systems.is_correct(both, QUESTIONS[0].answers)
    assert systems.is_correct(_answer("k1", "Plus is $4.99 a month."), QUESTIONS[0].answers)


def test_paired_test_needs_the_same_questions_and_counts_discordant_pairs():
    right, wrong = _answer("k1", "It is $4.99."), _answer("k1", "It is $9.")
    a = systems.score("a", [right, right], QUESTIONS[:1] * 2)
    b = systems.score("b", [wrong, right], QUESTIONS[:1] * 2)
    test = systems.paired(a, b)
    assert (test.a_only, test.b_only) == (1, 0) and test.p_value == 1.0
    import pytest
    with pytest.raises(ValueError):
        systems.paired(a, systems.score("c", [right], QUESTIONS[:1]))


def test_after_update_uses_the_updated_gold():
    old = [_answer("k1", "It is $4.99.")]
    assert systems.score("x", old, QUESTIONS).summary()["knowledge_accuracy"] == 1.0
    assert systems.score("x", old, QUESTIONS, after_update=True).summary()["knowledge_accuracy"] == 0.0


def test_invented_sources_do_not_count_as_citations():
    no_retrieval = _answer("k1", prompts.answer_json("It is $4.99.", ["kb-plus"]))
    assert not systems.cites_gold(no_retrieval, ["kb-plus"])


def test_prose_handoff_is_recognised():
    assert systems.is_handoff(_answer("u", "I'm not sure, let me pass you to a teammate."))
    assert not systems.is_handoff(_answer("u", "It costs $10."))


@dataclass
class _Profile:
    eval_knowledge_limit: int | None
    eval_unanswerable_limit: int | None


def test_evaluation_subset_is_fixed_and_keeps_changed_questions():
    from ftrag import data

    course = data.load_all()
    k, u = systems.evaluation_questions(course, _Profile(32, 10))
    assert len(k) == 32 and len(u) == 10 and len({q.id for q in k}) == 32
    changed_in_test = sum(q.changes_after_update for q in course.test.knowledge)
    assert sum(q.changes_after_update for q in k) == min(16, changed_in_test)  # forced in, up to half
    assert [q.id for q in k] == [q.id for q in systems.evaluation_questions(course, _Profile(32, 10))[0]]
    k_all, u_all = systems.evaluation_questions(course, _Profile(None, None))
    assert len(k_all) == len(course.test.knowledge) and len(u_all) == len(course.test.unanswerable)
    test_ids = {q.id for q in [*course.test.knowledge, *course.test.unanswerable]}
    assert {q.id for q in [*k, *u, *k_all, *u_all]} <= test_ids   # reported numbers come from test only


def test_looping_detects_repeated_tails_only():
    assert systems.looping("I don't have that information. " + "Stay bright! " * 6)
    assert systems.looping('{"answer": "ok", "sources": ["family.' + "family." * 9)
    assert not systems.looping(prompts.answer_json("Stay bright! Stay bright!", ["kb-a"]))
    assert not systems.looping("The Halo costs $89. Stay bright!")


def test_invalid_reply_report_counts_causes_and_prompt_lengths():
    valid = _answer("k1", prompts.answer_json("It is $4.99. Stay bright!", ["kb-plus"]), prompt_tokens=90)
    looped = systems.Answer("k2", "q?", Generation("Stay bright! " * 20, 440, 72, 1.0, 8.0),
                            evaluate.parse_reply("Stay bright! " * 20))
    cut = systems.Answer("k3", "q?", Generation('{"answer": "The Halo', 420, 72, 1.0, 8.0),
                         evaluate.parse_reply('{"answer": "The Halo'))
    short_prose = _answer("k4", "It costs $10.", prompt_tokens=100)
    report = systems.invalid_reply_report([valid, looped, cut, short_prose], max_new_tokens=72)
    assert report == {"replies": 4, "invalid": 3, "invalid_at_token_limit": 2, "invalid_looping": 1,
                      "median_prompt_tokens_valid": 90, "median_prompt_tokens_invalid": 420}


def test_display_table_shows_rates_with_wilson_intervals_and_human_headers():
    handoff = prompts.answer_json(prompts.HANDOFF_ANSWER, [], True)
    right = _answer("k1", prompts.answer_json("It is $4.99 for you.", ["kb-plus"]), ["kb-plus"])
    s = systems.score("rag", [right, _answer("k2", "30 days.", ["kb-returns"])], QUESTIONS, [_answer("u1", handoff)])
    row = {**s.summary(), "fresh_accuracy": 1.0, "update_seconds": 1.5}
    cmp = systems.Comparison({"rag": row}, {"rag": {**s.intervals(), "fresh_accuracy": (0.2, 1.0)}}, {"rag": s}, 2, 1, 1)
    table = cmp.display_table()
    assert "knowledge accuracy" in table.columns and "knowledge_accuracy" not in table.columns
    lo, hi = evaluate.wilson_ci([1, 1])
    assert table.loc["rag", "knowledge accuracy"] == f"1.00 [{lo:.2f}-{hi:.2f}]"
    assert table.loc["rag", "prompt tokens"] == "100"


def test_answers_table_keeps_whole_replies():
    long_reply = "It costs $4.99. " * 30
    styled = systems.answers_table([_answer("k1", long_reply)], QUESTIONS)
    assert styled.data.loc[0, "reply"] == long_reply and bool(styled.data.loc[0, "correct"])
    assert long_reply.strip() in styled.to_html()


# --------------------------------------------------------------------------- the hand-off gate


class _CountingGenerator:
    """Answers every prompt with a priced reply, and records which prompts reached it."""

    max_new_tokens = 16

    def __init__(self):
        self.asked = []

    def generate(self, conversations, desc=None, **_):
        self.asked += [c[-1]["content"] for c in conversations]
        return [Generation(prompts.answer_json("It costs $4.99. Stay bright!", []), 50, 9, 0.2, 0.2)
                for _ in conversations]


class _ScoredRetriever:
    """The best chunk's score is read from the question: "q@0.30" retrieves one chunk scored 0.30."""

    def retrieve_many(self, questions):
        chunks = [[RetrievedChunk("kb-plus", "kb-plus-0", float(q.split("@")[1]), "text")] for q in questions]
        return chunks, [0.0] * len(questions)


def test_the_gate_hands_off_below_its_threshold_without_asking_the_model():
    generator = _CountingGenerator()
    gated = systems.System("gated", generator, _ScoredRetriever(), handoff_below=0.45)
    answers = gated.ask([("a", "q@0.30"), ("b", "q@0.45"), ("c", "q@0.80")])
    assert [systems.is_handoff(a) for a in answers] == [True, False, False]
    assert len(generator.asked) == 2 and not any("q@0.30" in p for p in generator.asked)
    handoff = answers[0]
    assert handoff.parsed.valid and handoff.parsed.needs_human and all(evaluate.voice_checks(handoff.text).values())
    assert handoff.reply.prompt_tokens == 0 and handoff.retrieved_ids == ("kb-plus",)
    # every question below the threshold: the model is not called at all
    assert all(systems.is_handoff(a) for a in gated.ask([("d", "q@0.10")])) and len(generator.asked) == 2


def test_without_a_gate_every_question_reaches_the_model():
    generator = _CountingGenerator()
    answers = systems.System("plain", generator, _ScoredRetriever()).ask([("a", "q@0.01"), ("b", "q@0.9")])
    assert len(generator.asked) == 2 and not any(systems.is_handoff(a) for a in answers)


def test_a_gate_without_a_retriever_is_a_clear_error():
    import pytest

    from ftrag.errors import CourseError

    with pytest.raises(CourseError, match="give it a retriever"):
        systems.System("closed book", _CountingGenerator(), handoff_below=0.4)
    keyword_retriever = _ScoredRetriever()
    keyword_retriever.mode = "bm25"   # BM25 and fused scores are not similarities: a threshold means nothing
    with pytest.raises(CourseError, match="mode='dense'"):
        systems.System("gated bm25", _CountingGenerator(), keyword_retriever, handoff_below=0.4)


def test_comparison_plot_draws_a_dot_and_interval_per_system_and_marks_what_does_not_apply():
    import math
    from types import SimpleNamespace

    import matplotlib

    matplotlib.use("Agg")
    from ftrag import plots

    rows = {name: {m: 0.5 for m in systems.RATE_METRICS} for name in ("base", "rag", "hybrid")}
    rows["base"]["answer_rate_when_retrieved"] = math.nan
    intervals = {name: {m: (0.3, 0.7) for m in systems.RATE_METRICS} for name in rows}
    fig = plots.comparison_intervals(SimpleNamespace(rows=rows, intervals=intervals))
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == len(systems.RATE_METRICS)
    answers = panels[systems.RATE_METRICS.index("answer_rate_when_retrieved")]
    assert [t.get_text() for t in answers.texts] == ["n/a"] and len(answers.lines) == 2 * 2  # rag, hybrid
    knowledge = panels[0]
    assert len(knowledge.lines) == 2 * 3 and list(knowledge.lines[0].get_xdata()) == [0.3, 0.7]
    assert [t.get_text() for t in knowledge.get_yticklabels()] == ["base", "rag", "hybrid"]
    assert "lower is better" in panels[systems.RATE_METRICS.index("confident_wrong")].get_title()

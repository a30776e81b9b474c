"""The decision helper's recommendations are part of the course text: a change must be deliberate.

If one of these tests fails, a rule in ftrag/decide.py changed. Update the decision chapter and
the expected approach here together, or put the rule back.
"""
import itertools

import pytest

from ftrag.decide import (APPROACHES, SCENARIOS, TREE, Leaf, Question, Recommendation, decide,
                          flowchart)
from ftrag.errors import CourseError

BASE = dict(problem="knowledge", knowledge_changes_often=False, needs_citations=False,
            has_labelled_data=False, needs_strict_format_or_voice=False)

# The expected approach of every worked example in the decision chapter, written out again on
# purpose: SCENARIOS[i].expected could be edited together with the rules, this table cannot.
EXPECTED = {
    "Law firm: house drafting style": "fine-tune",
    "Law firm: questions over the case database": "rag",
    "Support bot over help-centre articles": "rag",
    "Medical coding assistant": "fine-tune",
    "Strict JSON extraction": "fine-tune",
    "Lumio support assistant (this course)": "hybrid",
    "Lumio in week one": "rag",
    "A tone, but no examples": "prompting first",
}


def test_scenarios_are_the_documented_ones():
    assert [s.name for s in SCENARIOS] == list(EXPECTED)
    assert len(SCENARIOS) >= 6


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_each_scenario_gives_its_expected_approach(scenario):
    rec = scenario.recommendation()
    assert rec.approach == scenario.expected == EXPECTED[scenario.name]
    assert rec.reasons, "every recommendation explains itself"


def test_every_approach_is_demonstrated():
    assert {s.expected for s in SCENARIOS} == set(APPROACHES)


def test_recommendation_is_frozen_and_typed():
    rec = decide(**BASE)
    assert isinstance(rec, Recommendation)
    assert isinstance(rec.reasons, tuple) and isinstance(rec.warnings, tuple)
    with pytest.raises(AttributeError):
        rec.approach = "fine-tune"


def test_knowledge_only_is_rag_whatever_else_holds():
    for changes, data, tried, volume in itertools.product([True, False], repeat=4):
        rec = decide(**{**BASE, "knowledge_changes_often": changes, "has_labelled_data": data,
                        "prompting_tried": tried, "high_volume": volume})
        assert rec.approach == "rag"


def test_stable_knowledge_with_data_still_rag_with_warning():
    rec = decide(**{**BASE, "has_labelled_data": True, "prompting_tried": True})
    assert rec.approach == "rag"
    assert any("evaluation set" in w for w in rec.warnings)
    assert any("measured comparisons favour retrieval" in w for w in rec.warnings)


def test_behaviour_needs_prompting_and_data_before_fine_tuning():
    behaviour = {**BASE, "problem": "behaviour"}
    assert decide(**behaviour).approach == "prompting first"
    assert decide(**behaviour, prompting_tried=True).approach == "prompting first"
    assert decide(**{**behaviour, "has_labelled_data": True}).approach == "prompting first"
    assert decide(**{**behaviour, "has_labelled_data": True},
                  prompting_tried=True).approach == "fine-tune"


def test_both_gaps_fall_back_to_rag_until_fine_tuning_is_justified():
    both = {**BASE, "problem": "both", "has_labelled_data": True}
    assert decide(**both).approach == "rag"
    assert decide(**both, prompting_tried=True).approach == "hybrid"
    assert decide(**{**both, "has_labelled_data": False}, prompting_tried=True).approach == "rag"


def test_citations_turn_a_behaviour_problem_into_both():
    rec = decide(**{**BASE, "problem": "behaviour", "needs_citations": True,
                    "has_labelled_data": True}, prompting_tried=True)
    assert rec.approach == "hybrid"
    assert "citations" in rec.reasons[0]


def test_strict_format_turns_a_knowledge_problem_into_both():
    rec = decide(**{**BASE, "needs_strict_format_or_voice": True, "has_labelled_data": True},
                 prompting_tried=True)
    assert rec.approach == "hybrid"


def test_neither_gap_means_prompting():
    rec = decide(**{**BASE, "problem": "neither"}, prompting_tried=True)
    assert rec.approach == "prompting first"
    assert rec.path == (("knowledge_gap", False), ("behaviour_gap", False))


def test_american_spelling_and_case_are_accepted():
    a = decide(**{**BASE, "problem": "Behavior", "has_labelled_data": True}, prompting_tried=True)
    b = decide(**{**BASE, "problem": "behaviour", "has_labelled_data": True}, prompting_tried=True)
    assert a == b and a.approach == "fine-tune"


def test_changing_knowledge_warns_and_fine_tune_warns_about_hybrid():
    rec = decide(**{**BASE, "knowledge_changes_often": True})
    assert any("re-index" in w for w in rec.warnings)
    ft = decide(problem="behaviour", knowledge_changes_often=True, needs_citations=False,
                has_labelled_data=True, needs_strict_format_or_voice=True, prompting_tried=True)
    assert ft.approach == "fine-tune"
    assert any("hybrid" in w for w in ft.warnings)


def test_training_approaches_warn_that_one_seed_is_one_sample():
    ft = decide(problem="behaviour", knowledge_changes_often=False, needs_citations=False,
                has_labelled_data=True, needs_strict_format_or_voice=True, prompting_tried=True)
    assert ft.approach == "fine-tune" and any("several seeds" in w for w in ft.warnings)
    assert not any("several seeds" in w for w in decide(**BASE).warnings)   # RAG trains nothing


def test_high_volume_adds_cost_notes():
    rec = decide(**{**BASE, "high_volume": True})
    assert any("every request" in w for w in rec.warnings)
    ft = decide(problem="behaviour", knowledge_changes_often=False, needs_citations=False,
                has_labelled_data=True, needs_strict_format_or_voice=True, prompting_tried=True,
                high_volume=True)
    assert any("per-request cost" in r for r in ft.reasons)


@pytest.mark.parametrize("problem", ["facts", "", "rag", None, 3])
def test_bad_problem_raises(problem):
    with pytest.raises(CourseError, match="problem must be one of"):
        decide(**{**BASE, "problem": problem})


@pytest.mark.parametrize("name", ["knowledge_changes_often", "needs_citations",
                                  "has_labelled_data", "needs_strict_format_or_voice",
                                  "prompting_tried", "high_volume"])
@pytest.mark.parametrize("value", ["yes", 1, None])
def test_non_bool_flags_raise(name, value):
    with pytest.raises(CourseError, match=name):
        decide(**{**BASE, name: value})


def test_missing_argument_is_a_type_error():
    with pytest.raises(TypeError):
        decide(problem="knowledge")  # the flags have no defaults on purpose


def _walk(node, path=()):
    if isinstance(node, Leaf):
        yield path, node
    else:
        yield from _walk(node.yes, path + ((node.key, True),))
        yield from _walk(node.no, path + ((node.key, False),))


def test_tree_leaves_are_valid_and_decide_follows_the_drawn_paths():
    leaves = list(_walk(TREE))
    assert len(leaves) == 8
    assert {leaf.approach for _, leaf in leaves} == set(APPROACHES)
    for path, leaf in leaves:
        answers = dict(path)
        kwargs = dict(
            problem={(True, True): "both", (True, False): "knowledge",
                     (False, True): "behaviour", (False, False): "neither"}[
                (answers["knowledge_gap"], answers["behaviour_gap"])],
            knowledge_changes_often=False, needs_citations=False,
            needs_strict_format_or_voice=False,
            has_labelled_data=answers.get("has_labelled_data", False),
            prompting_tried=answers.get("prompting_tried", False),
        )
        rec = decide(**kwargs)
        assert rec.approach == leaf.approach
        assert rec.path == path


def test_flowchart_renders():
    import matplotlib
    matplotlib.use("Agg")
    fig = flowchart()
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert sum(t.startswith("HYBRID") for t in texts) == 1
    assert sum(t.startswith("FINE-TUNE") for t in texts) == 1
    assert isinstance(TREE, Question)
    # the book draws the two branches of the first question, each with half the recommendations
    for branch, only in ((TREE.yes, "HYBRID"), (TREE.no, "FINE-TUNE")):
        big = flowchart(branch, fontsize=11)
        texts = [t.get_text() for t in big.axes[0].texts]
        assert sum(t.startswith(only) for t in texts) == 1
        assert big.get_size_inches()[0] < fig.get_size_inches()[0]
    with pytest.raises(CourseError, match="single recommendation"):
        flowchart(TREE.yes.no)


def test_a_schema_alone_points_to_constrained_decoding_first():
    kwargs = dict(problem="behaviour", knowledge_changes_often=False, needs_citations=False,
                  has_labelled_data=True, needs_strict_format_or_voice=True, prompting_tried=True)
    assert not any("constrained decoding" in w for w in decide(**kwargs).warnings)
    schema = decide(**kwargs, schema_only=True)
    assert schema.approach == "fine-tune"  # the tree is unchanged; the warning says what to try first
    assert any("constrained decoding" in w and "hand off" in w for w in schema.warnings)
    with pytest.raises(CourseError):
        decide(**kwargs, schema_only="yes")

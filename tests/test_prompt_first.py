"""Prompting before training: few-shot examples that leak nothing from the evaluation, and
constrained decoding whose finished replies are always schema-valid."""
import json

import pytest

from ftrag import constrained, data, evaluate, few_shot, prompts, sweeps
from ftrag.errors import CourseError
from ftrag.generation import Generator

PASSAGES = [("kb-a", "The Halo lamp has a two-year warranty."), ("kb-b", "Orders ship within two days.")]
CONVERSATIONS = [prompts.chat("How long is the Halo warranty?", PASSAGES[:1]),
                 prompts.chat("When will my order ship?", PASSAGES),
                 prompts.chat("Do you sell garden furniture?", PASSAGES[1:]),
                 prompts.chat("Hi there!"),
                 prompts.chat("Can I pay with a gift card?", [("kb-c", "Gift cards can pay for any order.")])]


@pytest.fixture(scope="module")
def course():
    return data.load_all()


def test_few_shot_examples_alternate_answers_and_hand_offs(course):
    picked = few_shot.pick_examples(course.finetune_train, 4)
    assert [c.kind for c in picked] == ["grounded", "handoff", "grounded", "handoff"]
    turns = few_shot.example_messages(picked)
    assert [m["role"] for m in turns] == ["user", "assistant"] * 4
    assert all(evaluate.parse_reply(m["content"]).valid for m in turns if m["role"] == "assistant")
    messages = prompts.chat("Where is my order?", examples=turns)
    assert messages[0]["content"] == prompts.SYSTEM_PROMPT and messages[1:-1] == list(turns)
    assert few_shot.pick_examples(course.finetune_train, 0) == []
    with pytest.raises(CourseError, match="fewer examples"):
        few_shot.pick_examples(course.finetune_train[:3], 4)


def test_no_few_shot_example_holds_an_evaluation_question_or_a_lumio_fact(course):
    examples = few_shot.pick_examples(course.finetune_train, max(sweeps.FEW_SHOT_CHOICES))
    assert few_shot.leaks(examples, course) == []
    few_shot.check_no_leak(examples, course)


def test_a_leaked_question_or_fact_is_caught(course):
    import dataclasses

    example = few_shot.pick_examples(course.finetune_train, 1)[0]
    question = course.test.knowledge[0]
    fact = sorted(few_shot.lumio_facts(course))[0]
    assert len(few_shot.lumio_facts(course)) > 100
    for planted in (question.question, f"Note: {fact.capitalize()}.", "Lumio sells lamps."):
        messages = [dict(m) for m in example.messages]
        messages[1]["content"] += " " + planted
        with pytest.raises(CourseError, match="evaluation material"):
            few_shot.check_no_leak([dataclasses.replace(example, messages=messages)], course)


def test_the_schema_allows_only_the_prompts_passage_ids():
    messages = CONVERSATIONS[1]
    assert constrained.passage_ids(messages) == ["kb-a", "kb-b"]
    schema = constrained.answer_schema(constrained.passage_ids(messages), max_answer_chars=50)
    assert list(schema["properties"]) == ["answer", "sources", "needs_human"]  # the order prompts teach
    assert schema["properties"]["sources"]["items"]["enum"] == ["kb-a", "kb-b"]
    assert schema["properties"]["answer"]["maxLength"] == 50
    assert constrained.answer_schema([])["properties"]["sources"]["maxItems"] == 0
    assert constrained.passage_ids(CONVERSATIONS[3]) == []
    with pytest.raises(ValueError):
        constrained.answer_schema(["kb-a"], max_answer_chars=0)


@pytest.fixture(scope="module")
def constrained_generator(tiny_model):
    model, tok = tiny_model
    constraint = constrained.JsonConstraint(tok, model.config.vocab_size, max_answer_chars=80)
    return Generator(model, tok, max_new_tokens=64, batch_size=8, constraint=constraint)


def test_a_constrained_reply_that_finishes_within_its_budget_is_schema_valid(constrained_generator):
    replies = constrained_generator.generate(CONVERSATIONS, progress=False)
    finished = [(c, r) for c, r in zip(CONVERSATIONS, replies) if r.new_tokens < constrained_generator.max_new_tokens]
    assert len(finished) >= 3  # an 80-character answer fits in 64 tokens
    for conversation, reply in finished:
        parsed = evaluate.parse_reply(reply.text)
        assert parsed.valid, reply.text
        assert set(parsed.sources) <= set(constrained.passage_ids(conversation)), reply.text
        assert len(json.loads(reply.text)["answer"]) <= 80
    assert constrained_generator.constraint.steps > 0
    assert constrained_generator.constraint.overhead_ms_per_token > 0


def test_batched_constrained_generation_matches_one_prompt_at_a_time(constrained_generator):
    batched = constrained_generator.generate(CONVERSATIONS, progress=False)
    single = [constrained_generator.answer(c) for c in CONVERSATIONS]
    assert [b.text for b in batched] == [s.text for s in single]


def test_constrained_replies_are_those_of_xgrammars_logits_processor(constrained_generator, tiny_model):
    """The course's decoder (one GrammarMatcher per row, finished rows leave the batch) writes the tokens
    that ``model.generate`` writes with xgrammar's own logits processor, one prompt at a time."""
    import torch

    model, tok = tiny_model
    batched = constrained_generator.generate(CONVERSATIONS, progress=False)
    assert len({r.new_tokens for r in batched}) > 1  # rows end at different steps: the batch shrinks
    for conversation, got in zip(CONVERSATIONS, batched):
        ids = torch.tensor([constrained_generator.prompt_ids(conversation)])
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=64,
                                 do_sample=False, pad_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
                                 logits_processor=[constrained_generator.constraint.processor([conversation])])
        assert got.text == tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()


def test_pick_few_shot_prefers_valid_replies_that_still_answer():
    rows = [{"few_shot_k": 0, "schema_validity": 0.0, "answer_rate_when_retrieved": 1.0, "split": "dev"},
            {"few_shot_k": 1, "schema_validity": 0.6, "answer_rate_when_retrieved": 0.9, "split": "dev"},
            {"few_shot_k": 2, "schema_validity": 0.6, "answer_rate_when_retrieved": 0.8, "split": "dev"},
            {"few_shot_k": 4, "schema_validity": 0.9, "answer_rate_when_retrieved": 0.3, "split": "dev"}]
    assert sweeps.pick_few_shot(rows) == 1  # k=4 hands off too often; 1 and 2 tie, the shorter prompt wins
    with pytest.raises(CourseError, match="dev split"):
        sweeps.pick_few_shot([{**rows[0], "split": "test"}])


def test_pick_max_answer_chars_takes_the_most_accurate_cap_that_stays_valid():
    rows = [{"max_answer_chars": 160, "schema_validity": 0.99, "knowledge_accuracy": 0.30, "split": "dev"},
            {"max_answer_chars": 240, "schema_validity": 0.97, "knowledge_accuracy": 0.35, "split": "dev"},
            {"max_answer_chars": 320, "schema_validity": 0.80, "knowledge_accuracy": 0.40, "split": "dev"}]
    assert sweeps.pick_max_answer_chars(rows) == 240
    assert sweeps.pick_max_answer_chars([{**r, "schema_validity": 0.5} for r in rows]) == 160


def test_examples_go_between_the_system_prompt_and_an_existing_chat(course):
    turns = few_shot.example_messages(few_shot.pick_examples(course.finetune_train, 2))
    question, passages = "Where is my order?", [("kb-a", "Orders ship in two days.")]
    assert few_shot.with_examples(prompts.chat(question, passages), turns) == prompts.chat(question, passages, turns)
    with pytest.raises(CourseError, match="system prompt"):
        few_shot.with_examples(prompts.chat(question)[1:], turns)


def test_pick_rag_instruction_takes_the_most_accurate_and_prefers_the_course_prompt_on_a_tie():
    rows = [{"instruction": name, "knowledge_accuracy": acc, "split": "dev"}
            for name, acc in (("json", 0.30), ("plain", 0.25), ("extract", 0.40), ("llamaindex", 0.40))]
    assert sweeps.pick_rag_instruction(rows) == "extract"   # a tie goes to the earlier choice
    assert sweeps.pick_rag_instruction([{**r, "knowledge_accuracy": 0.3} for r in rows]) == "json"
    with pytest.raises(CourseError, match="dev split"):
        sweeps.pick_rag_instruction([{**rows[0], "split": "test"}])


def test_instructions_change_only_the_system_prompt_and_llamaindex_sends_its_own_template():
    question = "How long is the Halo warranty?"
    schema, extract = prompts.chat(question, PASSAGES[:1]), prompts.chat(question, PASSAGES[:1], instruction="extract")
    assert schema[0]["content"] == prompts.SYSTEM_PROMPT and extract[0]["content"] == prompts.INSTRUCTIONS["extract"]
    assert schema[1:] == extract[1:]
    (only,) = prompts.chat(question, PASSAGES[:1], instruction="llamaindex")
    assert only["role"] == "user" and "[kb-a] The Halo lamp" in only["content"] and question in only["content"]
    assert "Given the context information and not prior knowledge" in only["content"]
    assert set(sweeps.RAG_INSTRUCTION_CHOICES) == set(prompts.INSTRUCTIONS)
    with pytest.raises(CourseError, match="Unknown instruction 'jsn'"):
        prompts.chat(question, instruction="jsn")

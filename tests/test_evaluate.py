import pytest

from ftrag import evaluate, prompts


def test_schema_exact_reply_is_valid():
    reply = prompts.answer_json("Plus costs $4.99 a month for you. Stay bright!", ["kb-plan-plus"], False)
    parsed = evaluate.parse_reply(reply)
    assert parsed.valid and parsed.sources == ("kb-plan-plus",) and parsed.needs_human is False


@pytest.mark.parametrize("raw, problem", [
    ("The answer is 4.99", "not JSON"),
    ('["a"]', "not an object"),
    ('{"answer": "x", "sources": []}', "keys"),
    ('{"answer": 3, "sources": [], "needs_human": false}', "answer is not a string"),
    ('{"answer": "x", "sources": "kb-a", "needs_human": false}', "sources"),
    ('{"answer": "x", "sources": [], "needs_human": "no"}', "needs_human"),
])
def test_invalid_replies_say_why(raw, problem):
    parsed = evaluate.parse_reply(raw)
    assert not parsed.valid and problem in parsed.problem


def test_prose_reply_keeps_its_text_for_accuracy():
    parsed = evaluate.parse_reply("The Plus plan costs $4.99 per month.")
    assert parsed.answer.startswith("The Plus plan") and evaluate.matches(parsed.answer, ["$4.99"])


@pytest.mark.parametrize("answer, accepted, expected", [
    ("It costs $4.99/month.", ["$4.99"], True),
    ("It costs $14.99/month.", ["$4.99"], False),           # whole tokens only
    ("Returns are accepted within 30 days.", ["30 days"], True),
    ("Shipping takes 3-5 business days", ["3-5 business days"], True),
    ("We ship 1,000 lamps", ["1000"], True),
    ("It is 4.", ["4.99"], False),
    ("Code E12 means Wi-Fi trouble", ["e12"], True),
])
def test_matches_normalises_but_respects_tokens(answer, accepted, expected):
    assert evaluate.matches(answer, accepted) is expected


def test_voice_checks_each_rule():
    good = "You can return it within 30 days. Stay bright!"
    assert all(evaluate.voice_checks(good).values())
    checks = evaluate.voice_checks("As an AI language model I think it is fine.")
    assert checks == {"concise": True, "second_person": False, "no_disclaimer": False, "sign_off": False}
    assert evaluate.voice_score(good) == 1.0


def test_bootstrap_interval_contains_the_mean_and_is_deterministic():
    values = [1.0] * 30 + [0.0] * 10
    lo, hi = evaluate.bootstrap_ci(values)
    assert lo < 0.75 < hi and (lo, hi) == evaluate.bootstrap_ci(values)
    assert evaluate.bootstrap_ci([1.0, 1.0]) == (1.0, 1.0)

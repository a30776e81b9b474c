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
    # the same value in another form: a plural unit, a hyphenated quantity, a range
    ("You can try Plus for free for 21 days.", ["21-day", "21 day"], True),
    ("The Hub comes with a 5-year warranty.", ["5 years"], True),
    ("Delivery takes 10-15 business days.", ["10–15 business days"], True),
    ("You can try Plus for free for 14 days.", ["21-day", "21 day"], False),   # another value
    ("The answer is 21.", ["21-day"], False),                                  # a number without its unit
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


@pytest.mark.parametrize("answer, accepted, expected", [
    ("The Orbit is priced at $149, and the shade is priced at $59.", ["$149"], False),   # two prices
    ("The Orbit costs $149. Stay bright!", ["$149"], True),
    ("You have 30 days to return it, or 14 days for opened items.", ["30 days"], False),  # two day counts
    ("You have 30 days to return it, and a refund takes 5 business days.", ["30 days"], True),  # other unit
    ("Delivery takes 5-8 business days.", ["5–8 business days", "5-8 business days"], True),
    ("Error E21 means the bulb is too hot; wait 10 minutes.", ["10 minutes"], True),   # E21 is a name
    ("Gift cards come in $25, $50 and $100.", ["$25, $50 and $100"], True),
    ("Up to 1,000 calls per hour.", ["1,000", "1000"], True),
    ("The student discount is 40% off, then 20% off.", ["40%"], False),
])
def test_is_correct_rejects_a_conflicting_value_of_the_same_kind(answer, accepted, expected):
    assert evaluate.is_correct(answer, accepted) is expected


def test_typed_values_reads_money_percent_and_quantities():
    values = evaluate.typed_values("From $4.99 (40% off) for 14-day trials or 3 homes; error E21; CR2032")
    assert values == {("money", "$4.99"), ("percent", "40"), ("day", "14"), ("home", "3")}


def test_wilson_interval_is_never_zero_width_and_matches_known_values():
    lo, hi = evaluate.wilson_ci([0] * 24)
    assert lo == 0.0 and 0.13 < hi < 0.15
    lo, hi = evaluate.wilson_ci([1] * 3 + [0] * 21)   # 3/24 = 0.125
    assert abs(lo - 0.0434) < 1e-3 and abs(hi - 0.3100) < 1e-3
    with pytest.raises(ValueError):
        evaluate.wilson_ci([0.5, 1.0])


def test_mcnemar_exact_p_values():
    assert evaluate.mcnemar([1] * 6, [0] * 6).p_value == pytest.approx(2 / 64)
    assert evaluate.mcnemar([1, 0], [0, 1]).p_value == 1.0
    assert evaluate.mcnemar([1, 1], [1, 1]).p_value == 1.0
    assert not evaluate.mcnemar([1, 1, 1, 0], [0, 0, 0, 0]).significant   # 3 vs 0: p = 0.25


def test_paired_outcome_in_words_follows_the_test():
    assert evaluate.mcnemar([1] * 6, [0] * 6).outcome == "ahead of"
    assert evaluate.mcnemar([0] * 6, [1] * 6).outcome == "behind"
    assert evaluate.mcnemar([1, 1, 1, 0], [0, 0, 0, 0]).outcome == "not separated from"   # p = 0.25


def test_is_handoff_reads_the_flag_or_the_words():
    assert evaluate.is_handoff(evaluate.parse_reply(prompts.answer_json("Sure!", [], True)))
    assert evaluate.is_handoff(evaluate.parse_reply("I'm passing you to a teammate."))
    assert not evaluate.is_handoff(evaluate.parse_reply(prompts.answer_json("It is $5.", [], False)))


def test_wilson_interval_from_counts_equals_the_one_from_outcomes():
    assert evaluate.wilson_interval(3, 24) == evaluate.wilson_ci([1] * 3 + [0] * 21)
    assert all(v != v for v in evaluate.wilson_interval(0, 0))   # NaN: no questions, no interval

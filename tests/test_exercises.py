"""The exercise checks: each accepts the right answer, rejects wrong ones with a useful hint."""
import json

import pytest

from ftrag import exercises as ex
from ftrag import lora_targets, memory, prompts
from ftrag.decide import SCENARIOS
from ftrag.rag import ChunkSettings, RetrievalReport


# ---- Feedback ---------------------------------------------------------------------------------
def test_feedback_prints_a_mark_and_the_hint_only_when_wrong():
    good = ex.Feedback(True, "right", hint="never shown")
    bad = ex.Feedback(False, "wrong", hint="look here")
    assert good and not bad
    assert repr(good) == str(good) == "\u2705 right"
    assert str(bad).startswith("\u274c wrong") and "Hint: look here" in str(bad)
    assert "never shown" not in good._repr_markdown_()
    assert "**Hint:** look here" in bad._repr_markdown_()


def test_feedback_markdown_escapes_markup():
    md = ex.Feedback(False, "keys [a] *b* <c>", hint="use `x`")._repr_markdown_()
    assert r"\[a\]" in md and r"\*b\*" in md and r"\<c\>" in md and r"\`x\`" in md


# ---- weight memory ----------------------------------------------------------------------------
def test_weight_memory_right_and_rounded():
    assert ex.check_weight_memory(7e9, 4, 3.26).ok
    assert ex.check_weight_memory(7e9, 4, 3.3).ok          # rounded to one decimal
    assert ex.check_weight_memory(7e9, 16, "13.04").ok     # a numeric string is fine
    fb = ex.check_weight_memory(135e6, 32, 0.503)
    assert fb.ok and fb.expected == pytest.approx(memory.weight_gib(135e6, 32))


def test_weight_memory_accepts_nf4_with_constants():
    with_constants = memory.weight_gib(7e9, memory.nf4_bits_per_param())
    fb = ex.check_weight_memory(7e9, 4, with_constants)
    assert fb.ok and "constants" in fb.message


@pytest.mark.parametrize("answer, hint", [
    (3.5, "GB"),          # 10**9 instead of 2**30
    (26.08, "8 bits"),    # forgot to divide by 8
    (3337.9, "MiB"),      # one 1024 short
    (3.5e9, "bytes"),
    (6.52, "one byte per parameter"),
    (1.0, "2**30"),
])
def test_weight_memory_wrong_answers_get_the_matching_hint(answer, hint):
    fb = ex.check_weight_memory(7e9, 4, answer)
    assert not fb.ok and hint in fb.hint, fb


def test_weight_memory_bad_inputs_are_feedback_not_exceptions():
    assert not ex.check_weight_memory(7e9, 4, "a lot")
    assert not ex.check_weight_memory(-1, 4, 1.0)
    assert not ex.check_weight_memory(7e9, 4, True)


# ---- LoRA -------------------------------------------------------------------------------------
def test_lora_params_right():
    fb = ex.check_lora_params(4096, 4096, 8, 65_536)
    assert fb.ok and fb.expected == memory.lora_params(4096, 4096, 8)
    assert ex.check_lora_params(576, 1536, 8, 16_896).ok


@pytest.mark.parametrize("answer, hint", [
    (576 * 1536, "frozen weight"),
    (8 * 576, "one of the two"),
    (8 * 576 * 1536, "thin"),
    (576 + 1536, "multiply by the rank"),
    (64, "not r x r"),
    (12_345, "count the numbers in both"),
])
def test_lora_params_wrong(answer, hint):
    fb = ex.check_lora_params(576, 1536, 8, answer)
    assert not fb.ok and hint in fb.hint, fb


def test_lora_params_bad_inputs():
    assert not ex.check_lora_params(16, 16, 32, 1024)     # rank above the layer
    assert not ex.check_lora_params(16, 16, 4, None)


def test_lora_adapter_size_from_shapes():
    shapes = [(576, 576), (576, 192), (576, 192), (576, 576)]
    params = lora_targets.lora_adapter_params(shapes, 8)
    assert params == 8 * (1152 + 768 + 768 + 1152)
    assert lora_targets.lora_adapter_mb(shapes, 16) == pytest.approx(2 * params * 4 / 1e6)
    with pytest.raises(Exception):
        lora_targets.lora_adapter_params([], 8)


def test_lora_shapes_reads_a_model():
    nn = pytest.importorskip("torch.nn")

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.q_proj = nn.Linear(8, 8)
            self.up_proj = nn.Linear(8, 24)

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([Block(), Block()])
            self.lm_head = nn.Linear(8, 100)

        def get_output_embeddings(self):
            return self.lm_head

    shapes = lora_targets.lora_shapes(Tiny())
    assert sorted(shapes) == [(8, 8), (8, 8), (8, 24), (8, 24)]
    assert lora_targets.lora_adapter_params(Tiny(), 2) == 2 * (16 + 16 + 32 + 32)
    assert lora_targets.lora_adapter_params(Tiny(), 2, last_blocks=1) == 2 * (16 + 32)  # the upper block only
    assert lora_targets.lora_adapter_mb(Tiny(), 2, last_blocks=1) == pytest.approx(2 * 48 * 4 / 1e6)


def test_adapter_size():
    assert ex.check_adapter_size(1.0, 2.01, ranks=(8, 16)).ok
    assert ex.check_adapter_size(1.0, 1.5).ok                      # direction only
    fb = ex.check_adapter_size(2.0, 1.0, ranks=(8, 16))
    assert not fb.ok and "argument order" in fb.hint
    assert not ex.check_adapter_size(1.0, 3.5, ranks=(8, 16)).ok    # not proportional
    assert not ex.check_adapter_size(1.0, 2.0, ranks=(16, 8)).ok    # ranks given big first
    assert not ex.check_adapter_size(0, 2.0).ok


# ---- costs ------------------------------------------------------------------------------------
def test_break_even():
    # $3,000 up front, 600 tokens saved at $0.50 per million tokens = $0.0003 per request
    assert ex.check_break_even(3000, 600, 0.5, 10_000_000).ok
    assert ex.check_break_even(3000, 600, 0.5, 1e7 * 1.01).ok
    assert "per million" in ex.check_break_even(3000, 600, 0.5, 10).hint
    assert "tokens saved" in ex.check_break_even(3000, 600, 0.5, 6e9).hint
    assert "Two steps" in ex.check_break_even(3000, 600, 0.5, 10 / 600).hint
    assert not ex.check_break_even(3000, 600, 0.5, 5e6)
    assert not ex.check_break_even(0, 600, 0.5, 1)
    assert not ex.check_break_even(3000, 600, 0.5, "many")


# ---- decision ---------------------------------------------------------------------------------
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_decision_every_scenario_by_name_and_by_inputs(scenario):
    assert ex.check_decision(scenario.name, scenario.expected).ok
    assert ex.check_decision(dict(scenario.inputs), scenario.expected).ok
    wrong = next(a for a in ("rag", "fine-tune", "hybrid", "prompting first") if a != scenario.expected)
    fb = ex.check_decision(scenario.inputs, wrong)
    assert not fb.ok and "Walk the questions" in fb.hint and fb.expected == scenario.expected


def test_decision_accepts_common_spellings():
    lumio = "Lumio support assistant (this course)"
    assert ex.check_decision(lumio, "Both").ok
    assert ex.check_decision("Medical coding assistant", "fine-tuning").ok
    assert ex.check_decision("A tone, but no examples", "prompting").ok


def test_decision_bad_input_is_explained():
    assert "not one of the four" in ex.check_decision("Lumio in week one", "magic").message
    assert not ex.check_decision("No such scenario", "rag")
    assert not ex.check_decision({"problem": "knowledge"}, "rag")           # missing arguments
    assert not ex.check_decision({"problem": "vibes", "knowledge_changes_often": True,
                                  "needs_citations": True, "has_labelled_data": False,
                                  "needs_strict_format_or_voice": False}, "rag")


# ---- retrieval metrics ------------------------------------------------------------------------
RANKS = [1, 3, None, 2, 1, 7, None, 1]          # 8 questions, 2 misses


def test_hit_at_k_right():
    assert ex.check_hit_at_k(RANKS, 1, 3 / 8).ok
    assert ex.check_hit_at_k(RANKS, 3, 0.625).ok
    assert ex.check_hit_at_k(RANKS, 3, 62.5).ok          # as a percentage
    assert ex.check_hit_at_k(RANKS, 10, 0.75).expected == 0.75


@pytest.mark.parametrize("k, answer, hint", [
    (3, 5, "count"),                 # hits, not share
    (3, 5 / 6, "stay in the denominator"),
    (3, 1 / 8, f"not only rank 3"),
    (3, 4 / 8, "Rank 3 itself still counts"),
    (3, 0.9, "divide by all 8"),
])
def test_hit_at_k_wrong(k, answer, hint):
    fb = ex.check_hit_at_k(RANKS, k, answer)
    assert not fb.ok and hint in fb.hint, fb


def test_hit_at_k_bad_input():
    assert not ex.check_hit_at_k([], 5, 0.0)
    assert not ex.check_hit_at_k([0, 1], 5, 1.0)
    assert not ex.check_hit_at_k([1.5], 5, 1.0)
    assert not ex.check_hit_at_k("123", 5, 1.0)
    assert not ex.check_hit_at_k([1, 2], 0, 1.0)


def test_mrr_right_and_wrong():
    expected = (1 + 1 / 3 + 1 / 2 + 1 + 1 / 7 + 1) / 8
    assert ex.check_mrr(RANKS, round(expected, 3)).ok
    found = [r for r in RANKS if r is not None]
    assert "still counts as a question" in ex.check_mrr(RANKS, expected * 8 / 6).hint
    assert "mean rank" in ex.check_mrr(RANKS, sum(found) / len(found)).hint
    assert "1 / (mean rank)" in ex.check_mrr(RANKS, len(found) / sum(found)).hint
    assert not ex.check_mrr(RANKS, "high")


def _sweep():
    def report(hit5, mrr):
        return RetrievalReport({1: hit5 - 0.2, 5: hit5}, mrr, 10)

    class Info:
        def __init__(self, chunking):
            self.chunking = chunking

    return [(Info(ChunkSettings(64, 8)), report(0.86, 0.70)),
            (Info(ChunkSettings(128, 16)), report(0.90, 0.74)),
            (Info(ChunkSettings(256, 32)), report(0.93, 0.78)),
            (Info(ChunkSettings(512, 64)), report(0.91, 0.77)),
            (Info(ChunkSettings(24, 0, "token", False)), report(0.60, 0.45))]


def test_chunk_sweep_claims_on_sweep_output():
    rows = _sweep()
    assert ex.check_chunk_sweep_claim(rows, "best: sentence 256/32").ok
    assert ex.check_chunk_sweep_claim(rows, 256, metric="mrr").ok
    assert ex.check_chunk_sweep_claim(rows, "worst: 24").ok
    fb = ex.check_chunk_sweep_claim(rows, "bigger is better")
    assert not fb.ok and "512 -> 0.910" in fb.message      # the drop, and the bad split left out
    assert not ex.check_chunk_sweep_claim(rows, "smaller is better")
    assert not ex.check_chunk_sweep_claim(rows, "size does not matter")
    assert not ex.check_chunk_sweep_claim(rows, "best: 512")
    assert "No chunking" in ex.check_chunk_sweep_claim(rows, "best: 1000").message
    assert not ex.check_chunk_sweep_claim(rows, "best", metric="recall")


def test_chunk_sweep_claims_on_dicts():
    rows = [{"chunking": "sentence 128/16", "hit@5": 0.80}, {"chunking": "sentence 256/32", "hit@5": 0.85},
            {"chunking": "sentence 512/64", "hit@5": 0.90}]
    assert ex.check_chunk_sweep_claim(rows, "Bigger is better").ok
    flat = [{"chunking": "a 100", "chunk_size": 100, "mrr": 0.5}, {"chunking": "b 200", "chunk_size": 200, "mrr": 0.51}]
    assert ex.check_chunk_sweep_claim(flat, "size does not matter", metric="mrr").ok
    assert not ex.check_chunk_sweep_claim([rows[0]], "bigger is better")
    assert not ex.check_chunk_sweep_claim([{"chunking": "x"}, {"chunking": "y"}], "best: x")


# ---- replies ----------------------------------------------------------------------------------
GOOD = prompts.answer_json("Your Plus plan costs $4.99 a month. Stay bright!", ["kb-plan-plus"])
HANDOFF = prompts.answer_json(prompts.HANDOFF_ANSWER, [], needs_human=True)


def test_json_reply_valid():
    assert ex.check_json_reply(GOOD).ok
    fb = ex.check_json_reply(HANDOFF)
    assert fb.ok and "hands off" in fb.message


@pytest.mark.parametrize("reply, hint", [
    ("", "empty"),
    ("```json\n" + GOOD + "\n```", "code fence"),
    ("Sure! " + GOOD, "before or after"),
    ("{'answer': 'hi', 'sources': [], 'needs_human': false}", "double quotes"),
    ('{"answer": "hi", "sources": [], "needs_human": false,}', "trailing comma"),
    ('{"answer": "hi", "sources": [], "needs_human": False}', "lower case"),
    ('{"answer": "hi", "sources": []}', "add needs_human"),
    ('{"answer": "hi", "sources": [], "needs_human": false, "mood": "happy"}', "remove mood"),
    ('{"answer": "hi", "sources": "kb-plan-plus", "needs_human": false}', "list of id strings"),
    ('{"answer": "hi", "sources": [], "needs_human": "no"}', "without quotes"),
    ('{"answer": 42, "sources": [], "needs_human": false}', "one string"),
    ('["hi"]', "one object"),
    ('{"answer": "You can get a discount for veterans. You can get a discount for', "token limit"),
])
def test_json_reply_explains_what_is_wrong(reply, hint):
    fb = ex.check_json_reply(reply)
    assert not fb.ok and hint in fb.hint, fb


def test_json_reply_takes_an_answer_like_object():
    class Parsed:
        raw = GOOD

    class Answer:
        parsed = Parsed()

    assert ex.check_json_reply(Answer()).ok
    assert not ex.check_json_reply(42)


def test_voice():
    assert ex.check_voice(GOOD).ok
    assert ex.check_voice("You can pair it in the app. Stay bright!").ok
    fb = ex.check_voice("As an AI language model, the lamp costs $10.")
    assert not fb.ok
    assert "second_person" in fb.message and "no_disclaimer" in fb.message and "sign_off" in fb.message
    assert "'as an ai'" in fb.hint and "Stay bright!" in fb.hint
    long = ex.check_voice("You " + "really " * 70 + "Stay bright!")
    assert not long.ok and "73 words" in long.hint
    assert not ex.check_voice(prompts.answer_json("Your order ships Monday.", []))  # sign-off missing


def test_new_article_answer():
    reply = prompts.answer_json("Your Halo Max costs $129. Stay bright!", ["kb-halo-max"])
    assert ex.check_new_article_answer(reply, ["$129", "129 dollars"]).ok
    assert ex.check_new_article_answer(reply, "$129", article_id="kb-halo-max").ok
    uncited = ex.check_new_article_answer(reply, "$129", article_id="kb-other")
    assert uncited.ok and "does not cite" in uncited.message
    fb = ex.check_new_article_answer(HANDOFF, "$129")
    assert not fb.ok and "handed off" in fb.hint
    assert not ex.check_new_article_answer("The price is $12.90.", "$129")
    assert not ex.check_new_article_answer(reply, [])


def test_new_article_answer_checks_retrieval_of_an_answer_object():
    class Chunk:
        def __init__(self, article_id):
            self.article_id = article_id

    class Parsed:
        raw = prompts.answer_json("It costs $129. Stay bright!", ["kb-halo"])

    class Answer:
        parsed = Parsed()
        retrieved = (Chunk("kb-halo"), Chunk("kb-halo-mini"))

    fb = ex.check_new_article_answer(Answer(), "$129", article_id="kb-halo-max")
    assert not fb.ok and "not among the retrieved" in fb.message

    class NoRetrieval:
        parsed = Parsed()
        retrieved = ()

    Parsed.raw = prompts.answer_json("The Halo Max is available for a limited time. Stay bright!", [])
    fb = ex.check_new_article_answer(NoRetrieval(), "$129", article_id="kb-halo-max")
    assert not fb.ok and "retrieves nothing" in fb.hint


def test_label_mask():
    eos = 2
    ids = [1, 10, 11, 12, 1, 20, 21, eos]
    right = {"input_ids": ids, "labels": [-100] * 5 + [20, 21, eos]}
    fb = ex.check_label_mask(right, eos)
    assert fb.ok and fb.expected == 3
    pad_trap = {"input_ids": ids, "labels": [-100] * 5 + [20, 21, -100]}
    assert "never learns to stop" in ex.check_label_mask(pad_trap, eos).message
    assert not ex.check_label_mask({"input_ids": ids, "labels": ids}, eos)            # prompt trained
    assert not ex.check_label_mask({"input_ids": ids, "labels": [-100] * 8}, eos)
    assert not ex.check_label_mask({"input_ids": ids[:-1], "labels": [-100] * 5 + [20, 21]}, eos)
    assert not ex.check_label_mask({"input_ids": ids, "labels": [-100] * 5 + [20, 99, eos]}, eos)
    assert not ex.check_label_mask({"input_ids": ids, "labels": []}, eos)



# ---- lab 0 -----------------------------------------------------------------------------------
def _toy_embed(text):
    # bag of three topic words: enough to make "reset"/"factory" sentences close, the colour one far
    words = text.lower()
    return [words.count("reset") + words.count("factory"), words.count("colour") + words.count("white"), 1.0]


SETUP_SENTENCES = ["How do I reset my lamp?", "Back to factory settings, please.", "It comes in white."]


def test_check_closest_pair_right_wrong_and_bad_input():
    assert ex.check_closest_pair(_toy_embed, SETUP_SENTENCES, (1, 0)).ok
    wrong = ex.check_closest_pair(_toy_embed, SETUP_SENTENCES, (0, 2))
    assert not wrong.ok and wrong.expected == (0, 1) and "0-1" in wrong.message
    assert not ex.check_closest_pair(_toy_embed, SETUP_SENTENCES, (1, 1)).ok
    assert not ex.check_closest_pair(_toy_embed, SETUP_SENTENCES, "zero and one").ok
    assert not ex.check_closest_pair(_toy_embed, SETUP_SENTENCES[:2], (0, 1)).ok


def test_check_context_share_accepts_share_or_percentage_and_hints_the_wrong_base():
    assert ex.check_context_share(100, 400, 0.75).ok
    assert ex.check_context_share(100, 400, "75").ok
    wrong = ex.check_context_share(100, 400, 3.0)   # context / prompt without context
    assert not wrong.ok and "whole prompt" in wrong.hint
    assert not ex.check_context_share(100, 400, "most of it").ok
    assert not ex.check_context_share(400, 100, 0.75).ok


def test_check_gpu_prediction_matches_this_machine():
    import torch

    has_gpu = torch.cuda.is_available()
    assert ex.check_gpu_prediction(has_gpu).ok
    right_or_wrong = ex.check_gpu_prediction(not has_gpu)
    assert not right_or_wrong.ok and right_or_wrong.expected == has_gpu
    assert not ex.check_gpu_prediction("no").ok

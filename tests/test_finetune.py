"""QLoRA building blocks: loss masking, LoRA targets, the adapter cache key, reports, and (slow) a
tiny real training run whose merged model answers exactly like the unmerged adapter."""
import json
import math
from dataclasses import dataclass
from pathlib import Path

import pytest

from ftrag import (adapters, behaviour_reports, costs, cpu_speedups, encoding, evaluate, inject, lora_targets,
                   merge_checks, profiles, prompts, training)
from ftrag.errors import CourseError, DataError


@dataclass(frozen=True)
class Example:
    id: str
    messages: tuple


def _example(i: int = 0, answer: str = "You can return it within 30 days. Stay bright!") -> Example:
    msgs = prompts.chat(f"Can I return lamp number {i}?", [("doc-1", "Returns are accepted for 30 days.")])
    return Example(f"ex-{i}", tuple(msgs) + ({"role": "assistant",
                                              "content": prompts.answer_json(answer, ["doc-1"])},))


@pytest.fixture(scope="module")
def tok(cpu_profile):
    from ftrag import profiles

    return profiles.load_tokenizer(cpu_profile)


# --------------------------------------------------------------------------- masking


def test_labels_mask_exactly_the_prompt(tok):
    ex = _example()
    enc = encoding.encode_example(tok, ex, 512)
    prompt = list(tok.apply_chat_template(list(ex.messages[:-1]), add_generation_prompt=True,
                                          tokenize=True, return_dict=False))
    n = len(prompt)
    assert enc["input_ids"][:n] == prompt
    assert enc["labels"][:n] == [-100] * n
    assert all(label != -100 for label in enc["labels"][n:])
    assert enc["labels"][n:] == enc["input_ids"][n:]
    assert len(enc["input_ids"]) == len(enc["labels"]) == len(enc["attention_mask"])
    assert set(enc["attention_mask"]) == {1}


def test_end_of_turn_is_supervised_and_decodes_to_the_reply(tok):
    ex = _example()
    enc = encoding.encode_example(tok, ex, 512)
    supervised = [t for t in enc["labels"] if t != -100]
    assert supervised[-1] == tok.eos_token_id  # the pad=eos trap: the real eos keeps its label
    assert tok.eos_token == "<|im_end|>"
    assert tok.decode(supervised) == ex.messages[-1]["content"] + "<|im_end|>"


def test_masked_tokens_match_the_full_conversation_template(tok):
    """Tokenising prompt and reply separately gives the template's own tokens for the whole chat."""
    ex = _example()
    enc = encoding.encode_example(tok, ex, 512)
    full = list(tok.apply_chat_template(list(ex.messages), tokenize=True, return_dict=False))
    assert full[: len(enc["input_ids"])] == enc["input_ids"]


def test_too_long_example_raises_with_its_id(tok):
    ex = _example(7)
    n = len(encoding.encode_example(tok, ex, 512)["input_ids"])
    assert len(encoding.encode_example(tok, ex, n)["input_ids"]) == n  # exactly max_len is fine
    with pytest.raises(DataError, match=r"^ex-7: .*longer than max_seq_len"):
        encoding.encode_example(tok, ex, n - 1)


def test_missing_assistant_turn_raises_with_its_id(tok):
    ex = Example("ex-no-reply", tuple(prompts.chat("Hello?")))
    with pytest.raises(DataError, match=r"^ex-no-reply: .*assistant"):
        encoding.encode_example(tok, ex, 512)
    with pytest.raises(DataError, match=r"^plain-list: "):
        encoding.encode_example(tok, prompts.chat("Hello?"), 512, example_id="plain-list")


def test_encode_examples_names_the_bad_one(tok):
    bad = Example("ex-bad", tuple(prompts.chat("Hi")) + ({"role": "assistant", "content": "  "},))
    with pytest.raises(DataError, match=r"^ex-bad: "):
        encoding.encode_examples(tok, [_example(1), bad], 512)


# --------------------------------------------------------------------------- LoRA targets


def test_lora_targets_come_from_the_model(tiny_model):
    model, _ = tiny_model
    assert lora_targets.lora_target_modules(model) == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])


def test_lora_targets_ignore_head_and_non_block_linears():
    import torch.nn as nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.Linear(4, 4)
            self.ffn_in = nn.Linear(4, 8)

    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([Block(), Block()])
            self.proj_out = nn.Linear(4, 4)  # outside the numbered blocks
            self.lm_head = nn.Linear(4, 10)

        def get_output_embeddings(self):
            return self.lm_head

    assert lora_targets.lora_target_modules(Toy()) == ["attn", "ffn_in"]
    with pytest.raises(CourseError):
        lora_targets.lora_target_modules(nn.Sequential())
    # Only the upper blocks: the paths of the last one, and peft's layer indices.
    assert [p for p, _ in lora_targets.block_linears(Toy(), last_blocks=1)] == ["blocks.1.attn", "blocks.1.ffn_in"]
    assert lora_targets.adapted_blocks(Toy(), 1) == [1] and lora_targets.adapted_blocks(Toy(), 2) == [0, 1]
    assert lora_targets.adapted_blocks(Toy(), None) is None
    for wrong in (0, 3):
        with pytest.raises(CourseError, match="2 decoder blocks"):
            lora_targets.adapted_blocks(Toy(), wrong)


def test_micro_batches_must_divide_the_batch(cpu_profile):
    assert cpu_speedups.micro_batch_size(cpu_profile.with_training(batch_size=4, micro_batch_size=None).training) == 4
    assert cpu_speedups.micro_batch_size(cpu_profile.with_training(batch_size=4, micro_batch_size=2).training) == 2
    for wrong in (3, 0):
        with pytest.raises(CourseError, match="must divide batch_size=4"):
            cpu_speedups.micro_batch_size(cpu_profile.with_training(batch_size=4, micro_batch_size=wrong).training)


def test_reply_only_loss_equals_the_usual_masked_loss(tiny_model):
    """Projecting only the supervised positions onto the vocabulary gives the standard loss."""
    import torch
    from transformers import DataCollatorForSeq2Seq

    model, tok = tiny_model
    batch = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100)(
        encoding.encode_examples(tok, [_example(1), _example(2, "Sure! Stay bright!")], 512))
    with torch.no_grad():
        usual = model(**batch).loss
        ours = cpu_speedups.reply_only_loss(model, batch)
    assert torch.isclose(usual, ours, rtol=1e-4), (usual, ours)


def _packing_examples():
    return [_example(1), _example(2, "Sure! Stay bright!"),
            Example("ex-3", tuple(prompts.chat("Hello there, who are you?")) + (
                {"role": "assistant", "content": prompts.answer_json("I'm Lumio's assistant. Stay bright!")},)),
            _example(1, "Yes, within 30 days. Stay bright!")]  # same prompt as the first, other reply


def test_packed_row_reads_the_shared_prefix_once_and_never_crosses_chats(tok):
    import torch

    enc = encoding.encode_examples(tok, _packing_examples(), 512)
    row = cpu_speedups.pack_shared_prefix(enc)
    prompt_lens = [e["labels"].count(-100) for e in enc]
    shared = (sum(len(e["input_ids"]) for e in enc) - len(row["input_ids"][0])) // (len(enc) - 1)
    assert 40 < shared < min(prompt_lens)  # the system prompt, and a prompt token of each chat's own
    mask, labels, pos = row["attention_mask"][0, 0], row["labels"][0].tolist(), row["position_ids"][0].tolist()
    assert mask.shape == (len(labels), len(labels)) and row["input_ids"].shape == (1, len(labels))
    start = shared
    for e in enc:
        end = start + len(e["input_ids"]) - shared
        assert row["input_ids"][0, start:end].tolist() == e["input_ids"][shared:]
        assert labels[start:end] == e["labels"][shared:] and labels[start] == -100  # own part opens with prompt
        assert pos[start:end] == list(range(shared, len(e["input_ids"])))         # positions as if alone
        assert mask[start:end, :shared].all()                                     # sees the whole prefix
        assert not mask[start:end, shared:start].any() and not mask[start:end, end:].any()  # no other chat
        assert torch.equal(mask[start:end, start:end], torch.ones(end - start, end - start, dtype=torch.bool).tril())
        start = end
    assert start == len(labels)


def test_packed_row_gives_the_padded_batch_loss_and_gradients(tiny_model):
    """Packing is an optimisation only: same loss, same gradients (here of two weight matrices, one
    in the first block's attention, which the prefix feeds, and one at the top)."""
    import torch
    from transformers import DataCollatorForSeq2Seq

    model, tok = tiny_model
    enc = encoding.encode_examples(tok, _packing_examples(), 512)
    weights = [model.model.layers[0].self_attn.k_proj.weight, model.model.layers[-1].mlp.down_proj.weight]
    results = []
    try:
        for w in weights:
            w.requires_grad_(True)
        for batch in (DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100)([dict(e) for e in enc]),
                      cpu_speedups.pack_shared_prefix(enc)):
            model.zero_grad()
            loss = cpu_speedups.reply_only_loss(model, batch)
            loss.backward()
            results.append((loss.detach(), [w.grad.clone() for w in weights]))
    finally:
        for w in weights:
            w.requires_grad_(False)
            w.grad = None
    (padded_loss, padded_grads), (packed_loss, packed_grads) = results
    assert torch.isclose(padded_loss, packed_loss, rtol=1e-5), (padded_loss, packed_loss)
    for a, b in zip(padded_grads, packed_grads):
        assert a.norm() > 0 and ((a - b).norm() / a.norm()) < 1e-4


def test_teacher_forcing_row_supervises_each_reply_and_its_end_of_turn(tok):
    convs = [prompts.chat("Can I return my lamp?"), prompts.chat("Hello!")]
    replies = ['{"answer": "Yes. Stay bright!"}', "Hi there."]
    row = merge_checks.teacher_forcing_row(tok, convs, replies, 512)
    labels = row["labels"][0].tolist()
    supervised = [t for t in labels if t != -100]
    assert tok.decode(supervised) == replies[0] + tok.eos_token + replies[1] + tok.eos_token
    with pytest.raises(CourseError, match="one reply per conversation"):
        merge_checks.teacher_forcing_row(tok, convs, replies[:1], 512)


def test_greedy_replies_are_the_top_tokens_of_their_teacher_forced_logits(tiny_model):
    """The premise of the lab's merge check: the argmax of reply_logits along a greedy reply is
    that reply (here the base model's own replies, end of turn included)."""
    from ftrag.generation import Generator

    model, tok = tiny_model
    convs = [prompts.chat("What is a lamp?"), prompts.chat("Say hello in one short sentence.")]
    replies = Generator(model, tok, max_new_tokens=40).generate(convs, progress=False)
    assert all(r.new_tokens < 40 for r in replies)  # both ended with the end-of-turn token
    row = merge_checks.teacher_forcing_row(tok, convs, replies, 512)
    targets = [t for t in row["labels"][0].tolist() if t != -100]
    assert merge_checks.reply_logits(model, row).argmax(-1).tolist() == targets


def test_next_token_agreement_counts_positions_where_the_top_token_differs():
    import torch

    a = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.5], [1.0, 0.0, 0.2], [0.0, 0.0, 5.0]])
    same = merge_checks.next_token_agreement(a, a + 1e-3)
    assert same["same_next_token"] == 1.0 and same["positions"] == 4
    assert same["max_logit_diff"] == pytest.approx(1e-3, rel=1e-3) and same["smallest_top_margin"] == pytest.approx(0.5)
    b = a.clone()
    b[1, 2] = 2.5  # the runner-up overtakes at one position of four
    assert merge_checks.next_token_agreement(a, b)["same_next_token"] == 0.75
    with pytest.raises(CourseError, match="same non-empty shape"):
        merge_checks.next_token_agreement(a, a[:2])


def test_packing_rejects_examples_not_made_by_encode_example():
    bad = {"input_ids": [1, 2, 3, 4], "labels": [-100, 5, -100, 6]}
    with pytest.raises(CourseError, match="encode_example"):
        cpu_speedups.pack_shared_prefix([bad])


def test_broken_bitsandbytes_is_a_course_error(monkeypatch):
    import bitsandbytes.functional as F

    def broken(*args, **kwargs):
        raise RuntimeError("no kernel for this backend")

    monkeypatch.setattr(F, "quantize_4bit", broken)
    with pytest.raises(CourseError, match="bitsandbytes.*no kernel.*pip install bitsandbytes"):
        training.check_bitsandbytes()


# --------------------------------------------------------------------------- cache key


def test_adapter_key_changes_with_settings_data_and_model(cpu_profile):
    train, val = [_example(1), _example(2)], [_example(3)]
    key = training.adapter_key(cpu_profile, train, val)
    assert key == training.adapter_key(cpu_profile, list(train), list(val))  # deterministic
    assert key != training.adapter_key(cpu_profile.with_training(lora_rank=16), train, val)
    assert key != training.adapter_key(cpu_profile.with_training(max_steps=37), train, val)
    assert key != training.adapter_key(cpu_profile.with_training(learning_rate=2e-4), train, val)
    assert key != training.adapter_key(cpu_profile, train[:1], val)
    assert key != training.adapter_key(cpu_profile, [_example(1, "Other reply. Stay bright!"), train[1]], val)
    assert key != training.adapter_key(cpu_profile, train, [])
    from dataclasses import replace

    assert key != training.adapter_key(replace(cpu_profile, model_id="other/model"), train, val)
    folder = training.adapter_dir_for(cpu_profile, "behaviour", train, val)
    assert folder.name == f"behaviour-{key}" and folder.parent.name == "adapters"


def test_ensure_adapter_uses_a_complete_cached_folder(cpu_profile, tmp_path, monkeypatch):
    monkeypatch.setenv("FTRAG_CACHE_DIR", str(tmp_path))
    train, val = [_example(1)], [_example(2)]
    folder = training.adapter_dir_for(cpu_profile, "unit", train, val)
    folder.mkdir(parents=True)
    stored = training.TrainResult(str(folder), [(1, 2.0)], [(0, 3.0), (1, 1.5)], 10.0, 10.0, 1, 900.0,
                                  100, 10_000, {"lora_rank": 8})
    (folder / training.METRICS_FILE).write_text(json.dumps(stored.to_json()))

    calls = []
    monkeypatch.setattr(training, "train_adapter", lambda *a, **k: calls.append(a) or "trained")
    # incomplete folder (no adapter weights): trains again
    assert training.ensure_adapter(cpu_profile, "unit", train, val, progress=False) == "trained"
    (folder / adapters.ADAPTER_FILE).write_bytes(b"weights")
    (folder / adapters.ADAPTER_CONFIG).write_text("{}")
    result = training.ensure_adapter(cpu_profile, "unit", train, val, progress=False)
    assert len(calls) == 1
    assert result.cached is True
    assert result.val_losses == [(0, 3.0), (1, 1.5)] and result.trainable_share == 0.01
    assert adapters.adapter_cache_tag(cpu_profile, folder).startswith("cpu-adapter-")


# --------------------------------------------------------------------------- helpers and reports


def test_evenly_spaced_keeps_both_ends():
    assert evaluate.evenly_spaced(range(10), 4) == [0, 3, 6, 9]
    assert evaluate.evenly_spaced(range(3), 5) == [0, 1, 2]
    assert evaluate.evenly_spaced(range(3), None) == [0, 1, 2]


def test_behaviour_report_scores_json_voice_and_handoff():
    good = prompts.answer_json("You can return it within 30 days. Stay bright!", ["doc-1"])
    handoff = prompts.answer_json(prompts.HANDOFF_ANSWER, [], True)
    prose = "As an AI language model I cannot help."
    rep = behaviour_reports.behaviour_report([good, handoff, prose], [False, True, False])
    assert rep["n"] == 3
    assert rep["json_valid"] == pytest.approx(2 / 3)
    assert rep["json_valid_ci"] == pytest.approx(evaluate.wilson_interval(2, 3))
    assert rep["needs_human_accuracy"] == pytest.approx(2 / 3)  # the prose reply has no flag: wrong
    assert rep["handoff_reply_when_needed"] == 1.0 and rep["handoff_reply_when_not_needed"] == 0.0
    assert rep["handoff_replies_flagged"] == 1.0
    # the hand-off sentence without the flag: needs_human looks right on the first prompt, yet the
    # customer got no answer and nobody was told to take over
    unflagged = prompts.answer_json(prompts.HANDOFF_ANSWER, [], False)
    over = behaviour_reports.behaviour_report([unflagged, handoff, good], [False, True, False])
    assert over["needs_human_accuracy"] == 1.0
    assert over["handoff_reply_when_not_needed"] == 0.5 and over["handoff_replies_flagged"] == 0.5
    only_good = behaviour_reports.behaviour_report([good], [False])
    assert "handoff_reply_when_needed" not in only_good and "handoff_replies_flagged" not in only_good
    assert rep["voice_rules"]["sign_off"] == pytest.approx(2 / 3)
    assert rep["voice_rules"]["no_disclaimer"] == pytest.approx(2 / 3)
    assert 0 < rep["voice"] < 1
    assert "needs_human_accuracy" not in behaviour_reports.behaviour_report([good])
    table = behaviour_reports.behaviour_table({"before": rep})
    assert table.loc["voice: sign off", "before"] == pytest.approx(2 / 3)
    assert not [label for label in table.index if "_" in label.replace("needs_human", "")]  # the JSON key stays


def test_coverage_says_how_much_of_the_data_the_steps_read():
    def run(steps, examples, batch_size=4):
        return training.TrainResult("a", [], [], 1.0, 1.0, steps, 1.0, 1, 10, {"batch_size": batch_size},
                                    examples=examples)

    assert run(24, 358).coverage() == "24 steps of 4 chats: 96 of the 358 training chats, once each"
    assert run(96, 358).coverage() == "96 steps of 4 chats: 1.1 passes over the 358 training chats"
    assert run(5, 0).coverage() == "5 steps"  # a result stored before examples were recorded


def test_distinct_first_prefers_replies_not_seen_yet():
    replies = ["a", "a", "b", "a", "c", "b"]
    assert behaviour_reports.distinct_first(replies, 3) == [0, 2, 4]
    assert behaviour_reports.distinct_first(replies, 4) == [0, 1, 2, 4]
    assert behaviour_reports.distinct_first(replies, 10) == list(range(6))


def test_knowledge_report_counts_confident_wrong_answers():
    replies = [prompts.answer_json("It is called Firefly. Stay bright!"),       # right
               prompts.answer_json("It is called Moonbeam. Stay bright!"),      # wrong, confident
               prompts.answer_json(prompts.HANDOFF_ANSWER, [], True),           # wrong, hands off
               "Probably Lantern.",                                             # wrong, prose, no hand-off
               prompts.answer_json(prompts.HANDOFF_ANSWER, [], False)]          # hand-off in words only
    rep = behaviour_reports.knowledge_report(replies, [["Firefly"]] * 5)
    assert rep["accuracy"] == 0.2
    assert rep["confident_wrong"] == 0.4   # Moonbeam and Lantern; a worded hand-off is not confident
    assert rep["correct"] == [True, False, False, False, False]


def test_tokens_per_second_and_sizes(tmp_path):
    from ftrag.generation import Generation

    gens = [Generation("a", 10, 20, 1.0, 2.0), Generation("b", 10, 40, 1.0, 2.0)]
    assert costs.tokens_per_second(gens) == 30.0
    assert math.isnan(costs.tokens_per_second([]))
    (tmp_path / adapters.ADAPTER_FILE).write_bytes(b"\0" * 2**20)
    assert costs.adapter_size_mb(tmp_path) == 2**20 / 1e6
    with pytest.raises(CourseError):
        costs.adapter_size_mb(tmp_path / "missing")
    assert costs.peak_memory_mb() > 10


def test_inject_setup_picks_whole_facts(cpu_profile):
    from ftrag.data import load_inject_facts

    train, test = load_inject_facts("train"), load_inject_facts("test")
    prof, tr, te = inject.inject_setup(cpu_profile, train, test, n_facts=5, epochs=2, lr_factor=3)
    facts = {ex.fact_id for ex in tr}
    assert len(facts) == 5 and {q.fact_id for q in te} == facts
    assert len(tr) == 4 * 5  # every phrasing of the chosen facts
    assert prof.training.max_steps == math.ceil(2 * len(tr) / cpu_profile.training.batch_size)
    assert prof.training.learning_rate == pytest.approx(3 * cpu_profile.training.learning_rate)
    assert prof.training.lora_rank == cpu_profile.training.lora_rank  # the rest as the profile has it
    answers = inject.training_phrasing_answers(tr, te)
    assert len(answers) == len(tr) and all(answers)


def test_behaviour_prompt_sets_follow_the_profile(cpu_profile):
    from dataclasses import replace

    from ftrag.data import load_all

    course = load_all()
    sets = behaviour_reports.behaviour_prompt_sets(course, cpu_profile)
    limit = cpu_profile.eval_behaviour_limit
    assert [len(sets[name][0]) for name in ("validation", "format")] == [limit, limit]
    fmt = behaviour_reports.behaviour_format_prompts(course, cpu_profile)
    assert sets["format"][1] == [f.expect_needs_human for f in fmt] and any(sets["format"][1])
    assert sets["format"][0][0][-1]["content"].endswith(fmt[0].question)
    assert all(msgs[-1]["role"] == "user" for msgs in sets["validation"][0])  # replies removed
    everything = behaviour_reports.behaviour_prompt_sets(course, replace(cpu_profile, eval_behaviour_limit=None))
    assert len(everything["format"][0]) == len(course.format_prompts)
    assert len(everything["validation"][0]) == len(course.finetune_val)


# --------------------------------------------------------------------------- NF4 training on a CPU


def _lora_gradients(profile, row, *, eval_pass_first: bool):
    import torch

    torch.manual_seed(0)  # the same LoRA initialisation for every model
    model = training.qlora_model(profile)
    if eval_pass_first:  # what Trainer.evaluate() does before the first step
        model.eval()
        with torch.no_grad():
            model(**{k: v for k, v in row.items() if k != "labels"})
    model.train()
    loss = cpu_speedups.reply_only_loss(model, row)
    loss.backward()
    return loss.item(), {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.slow
def test_an_eval_pass_before_training_leaves_the_lora_gradients_unchanged(cpu_profile, tok):
    """On a CPU with AVX512-BF16, bitsandbytes repacks NF4 weights for inference at the first eval
    pass, and back-propagating through the repacked layers gives wrong gradients (160% off on such
    a machine before cpu_speedups.keep_nf4_trainable). Elsewhere both runs are trivially the same."""
    profile = cpu_profile.with_training(adapted_blocks=3)
    row = cpu_speedups.pack_shared_prefix(encoding.encode_examples(tok, _packing_examples()[:2], 512))
    fresh_loss, fresh = _lora_gradients(profile, row, eval_pass_first=False)
    loss, after_eval = _lora_gradients(profile, row, eval_pass_first=True)
    assert loss == pytest.approx(fresh_loss, rel=1e-5)
    nonzero = [n for n, g in fresh.items() if g.norm() > 0]
    assert len(nonzero) >= len(fresh) // 2  # LoRA's B matrices (A starts with zero gradient: B = 0)
    for name in nonzero:
        assert ((after_eval[name] - fresh[name]).norm() / fresh[name].norm()) < 1e-4, name


def _nf4_layer():
    import bitsandbytes as bnb
    import torch

    torch.manual_seed(0)
    layer = bnb.nn.Linear4bit(64, 32, bias=False, compute_dtype=torch.float32, quant_type="nf4")
    layer.load_state_dict({"weight": torch.randn(32, 64)})
    return layer.to("cpu"), torch.randn(3, 64)


def test_keep_nf4_trainable_keeps_the_trainable_layout_after_an_eval_pass():
    import torch

    layer, x = _nf4_layer()
    expected = layer(x).detach()
    assert cpu_speedups.keep_nf4_trainable(torch.nn.Sequential(layer)) == 1
    layer.eval()
    with torch.no_grad():
        assert torch.equal(layer(x), expected)  # still the standard kernel
    assert not getattr(layer.weight.quant_state, "packing_format_for_cpu", False)
    layer.train()
    x.requires_grad_(True)
    layer(x).sum().backward()
    assert x.grad is not None and x.grad.norm() > 0


def test_keep_nf4_trainable_refuses_a_layer_already_repacked():
    import torch
    from bitsandbytes.functional import has_avx512bf16

    layer, x = _nf4_layer()
    layer.eval()
    with torch.no_grad():
        layer(x)
    if not has_avx512bf16():
        pytest.skip("this CPU has no AVX512-BF16: bitsandbytes never repacks here")
    with pytest.raises(CourseError, match="Load a fresh one"):
        cpu_speedups.keep_nf4_trainable(torch.nn.Sequential(layer))


class _FakeNF4Weight:
    """What keep_nf4_trainable recognises a 4-bit weight by (bitsandbytes' Params4bit has it)."""

    quant_state = None


def _fake_nf4_layer(switch_name: str = "support_avx512bf16_for_cpu"):
    """A 4-bit layer of a fake module tree, with bitsandbytes' switch under ``switch_name``."""
    import torch

    layer = torch.nn.Module()
    layer.weight = _FakeNF4Weight()
    setattr(layer, switch_name, True)
    return layer


def test_keep_nf4_trainable_turns_off_the_switch_of_every_4bit_layer():
    import torch

    model = torch.nn.Sequential(_fake_nf4_layer(), torch.nn.Linear(2, 2), _fake_nf4_layer())
    assert cpu_speedups.keep_nf4_trainable(model) == 2
    assert model[0].support_avx512bf16_for_cpu is False and model[2].support_avx512bf16_for_cpu is False


def test_keep_nf4_trainable_refuses_4bit_layers_without_the_switch():
    """A bitsandbytes release that renamed the switch must not make the fix silently do nothing."""
    import torch

    renamed = torch.nn.Sequential(_fake_nf4_layer("cpu_fast_inference"), torch.nn.Linear(2, 2))
    with pytest.raises(CourseError, match="support_avx512bf16_for_cpu.*bitsandbytes==0.50.2"):
        cpu_speedups.keep_nf4_trainable(renamed)
    assert cpu_speedups.keep_nf4_trainable(torch.nn.Sequential(torch.nn.Linear(2, 2))) == 0  # nothing 4-bit


def test_adapter_cache_tag_carries_the_generation_version(cpu_profile, tmp_path, monkeypatch):
    from ftrag import generation, systems

    assert systems.GENERATION_VERSION == generation.GENERATION_VERSION  # one version for every reply cache
    (tmp_path / adapters.ADAPTER_FILE).write_bytes(b"weights")
    version = generation.GENERATION_VERSION
    tag = adapters.adapter_cache_tag(cpu_profile, tmp_path)
    assert tag.startswith("cpu-adapter-") and tag.endswith(f"-{version}")
    monkeypatch.setattr(generation, "GENERATION_VERSION", "g-next")
    assert adapters.adapter_cache_tag(cpu_profile, tmp_path) == tag[: -len(version)] + "g-next"


# --------------------------------------------------------------------------- a real (tiny) run


@pytest.mark.slow
def test_tiny_training_run_with_padded_micro_batches(cpu_profile, tmp_path):
    """The gpu profile's path: padded micro-batches with gradient accumulation, no packing."""
    profile = cpu_profile.with_training(max_steps=1, batch_size=2, micro_batch_size=1, share_prompt_prefix=False,
                                        adapted_blocks=2, eval_every=1)
    run = training.train_adapter(profile, [_example(i) for i in range(2)], [_example(10)],
                                 output_dir=tmp_path / "padded", progress=False)
    assert run.steps == 1 and run.settings["share_prompt_prefix"] is False
    assert [s for s, _ in run.val_losses] == [0, 1] and all(math.isfinite(v) for _, v in run.val_losses)


def test_tiny_training_run_merges_to_the_same_answers(cpu_profile, tmp_path, monkeypatch):
    from ftrag import profiles
    from ftrag.generation import Generator

    monkeypatch.setenv("FTRAG_CACHE_DIR", str(tmp_path))
    # the cpu profile's path: each step's chats packed into one row that shares their prompt prefix
    profile = cpu_profile.with_training(max_steps=2, batch_size=2, micro_batch_size=None, adapted_blocks=3,
                                        eval_every=1, learning_rate=5e-3)
    assert profile.training.share_prompt_prefix
    train = [_example(i) for i in range(4)]
    val = [_example(10)]
    run = training.ensure_adapter(profile, "tiny", train, val, progress=False)
    assert run.cached is False and run.steps == 2
    from safetensors import safe_open

    with safe_open(str(Path(run.adapter_dir) / adapters.ADAPTER_FILE), "pt") as weights:
        blocks = {int(k.split(".layers.")[1].split(".")[0]) for k in weights.keys()}
    assert sorted(blocks) == list(range(30 - profile.training.adapted_blocks, 30))  # only the upper blocks
    assert [s for s, _ in run.train_losses] == [1, 2]
    assert [s for s, _ in run.val_losses] == [0, 1, 2]
    assert 0 < run.trainable_share < 0.05
    assert training.is_complete(run.adapter_dir)
    assert 0 < costs.adapter_size_mb(run.adapter_dir) < 20
    again = training.ensure_adapter(profile, "tiny", train, val, progress=False)
    assert again.cached is True and again.adapter_dir == run.adapter_dir

    tok = profiles.load_tokenizer(profile)
    questions = [prompts.chat("Can I return my lamp?", [("doc-1", "Returns are accepted for 30 days.")]),
                 prompts.chat("Hello!")]
    peft_model = adapters.load_tuned(profile, run.adapter_dir, merge=False)
    loss = merge_checks.nf4_merge_loss(peft_model)
    assert loss["update_lost_full"] < 1e-3 < loss["update_lost_nf4"]
    adapter_replies = [g.text for g in Generator(peft_model, tok, max_new_tokens=24).generate(questions, progress=False)]
    row = merge_checks.teacher_forcing_row(tok, questions, adapter_replies, 512)
    adapter_logits = merge_checks.reply_logits(peft_model, row)
    merged = peft_model.merge_and_unload()
    merged_replies = [g.text for g in Generator(merged, tok, max_new_tokens=24).generate(questions, progress=False)]
    assert merged_replies == adapter_replies
    from ftrag import systems

    tuned = systems.tuned_generator(profile, run.adapter_dir, tokenizer=tok)  # what the labs ask
    assert tuned.cache_tag == adapters.adapter_cache_tag(profile, run.adapter_dir)
    assert (tuned.max_new_tokens, tuned.batch_size) == (profile.max_new_tokens, profile.generation_batch_size)
    tuned.max_new_tokens = 24
    assert [g.text for g in tuned.generate(questions, progress=False)] == merged_replies
    agreement = merge_checks.next_token_agreement(adapter_logits, merge_checks.reply_logits(merged, row))
    assert agreement["same_next_token"] == 1.0 and agreement["max_logit_diff"] < 1e-2


@pytest.mark.slow
def test_a_trainer_built_by_hand_finds_the_profiles_adapter_unless_it_differs(cpu_profile, tmp_path):
    """train_or_load's key: the profile's key for the Trainer train_adapter would build, another one
    (naming what differs) when the reader changed an object."""
    import copy

    from ftrag import data

    train, val = data.load_finetune("train")[:8], data.load_finetune("val")[:4]
    tok = profiles.load_tokenizer(cpu_profile)
    train_set, val_set = training.encoded_splits(tok, cpu_profile, train, val)
    model = training.qlora_model(cpu_profile)
    args = training.training_arguments(cpu_profile, tmp_path / "scratch")
    trainer = training.course_trainer(cpu_profile, model, args, train_set, val_set, tok)
    assert training.setup_changes(trainer, cpu_profile, train, val) == {}
    # building the profile's TrainingArguments to compare resets accelerate's shared state; the
    # reader's Trainer must still evaluate (a clean-clone lab 2 run failed here once)
    assert trainer.evaluate()["eval_loss"] > 0
    trainer.args.learning_rate *= 2
    assert set(training.setup_changes(trainer, cpu_profile, train, val)) == {"arguments"}
    trainer.args.learning_rate /= 2
    changed = copy.deepcopy(model.peft_config["default"])
    changed.r = 4
    model.peft_config["default"] = changed
    changes = training.setup_changes(trainer, cpu_profile, train, val)
    assert set(changes) == {"lora"} and changes["lora"]["r"] == 4
    assert training.adapter_key(cpu_profile, train, val, changes) != training.adapter_key(cpu_profile, train, val)

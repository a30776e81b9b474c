"""Settings are chosen on dev only, by written-down rules, and the profiles use what the saved
sweeps picked."""
import dataclasses
import json

import pytest

from ftrag import data, profiles, prompts, rag, sweeps
from ftrag.errors import CourseError
from ftrag.generation import Generation
from ftrag.paths import REPO_ROOT
from ftrag.rag import RetrievedChunk


def _row(system, k, acc, split="dev"):
    return {"system": system, "top_k": k, "knowledge_accuracy": acc, "split": split}


def test_pick_top_k_takes_the_best_dev_accuracy_and_the_smaller_k_on_a_tie():
    rows = [_row("rag", 1, 0.4), _row("rag", 2, 0.5), _row("rag", 3, 0.5), _row("hybrid", 1, 0.3), _row("hybrid", 5, 0.2)]
    assert sweeps.pick_top_k(rows, "rag") == 2
    assert sweeps.pick_top_k(rows, "hybrid") == 1
    with pytest.raises(CourseError, match="dev split only"):
        sweeps.pick_top_k(rows + [_row("rag", 10, 0.9, split="test")], "rag")
    with pytest.raises(CourseError, match="no rows"):
        sweeps.pick_top_k(rows, "base")


def test_pick_max_new_tokens_is_the_smallest_budget_that_cuts_no_system_short():
    rows = [{"system": s, "max_new_tokens": b, "schema_validity": v} for s, b, v in (
        ("rag", 48, 0.5), ("rag", 72, 0.8), ("rag", 96, 0.8), ("hybrid", 48, 0.7), ("hybrid", 72, 0.9),
        ("hybrid", 96, 0.95))]
    assert sweeps.pick_max_new_tokens(rows) == 96
    assert sweeps.pick_max_new_tokens(rows, tolerance=0.05) == 72


def _training_row(steps, share, seed, refusal, answers, split="dev"):
    return {"steps": steps, "handoff_share": share, "seed": seed, "split": split, "refusal_accuracy": refusal,
            "answer_rate_when_retrieved": answers, "knowledge_accuracy": 0.3, "schema_validity": 0.9,
            "handoff_chats": 10, "train_chats": 100}


def _training_rows():
    # (steps, share): one (refusal, answers) per seed 0, 1, 2
    runs = {(24, 0.5): ((1.0, 0.1), (1.0, 0.2), (0.9, 0.1)),     # hands off almost everything
            (48, 0.5): ((0.9, 0.6), (0.2, 0.9), (0.7, 0.5)),     # mean refusal 0.6, answers 0.67
            (48, 0.2): ((1.0, 0.5), (0.0, 1.0), (0.1, 0.9)),     # one lucky seed: mean refusal 0.37
            (24, 0.2): ((0.6, 0.55), (0.0, 0.9), (0.3, 0.7))}
    return [_training_row(steps, share, seed, *run) for (steps, share), seeds in runs.items()
            for seed, run in enumerate(seeds)]


def test_pick_training_judges_each_setting_by_its_mean_over_seeds():
    rows = _training_rows()
    means = {(r["steps"], r["handoff_share"]): r for r in sweeps.training_means(rows)}
    assert means[48, 0.5]["refusal_accuracy"] == pytest.approx(0.6)
    assert (means[48, 0.5]["refusal_accuracy_min"], means[48, 0.5]["refusal_accuracy_max"]) == (0.2, 0.9)
    assert means[48, 0.5]["seeds"] == [0, 1, 2]
    # seed 0 alone would pick 48:0.2 (refusal 1.0, answers 0.5); the mean over seeds picks 48:0.5,
    # and 24:0.5, which hands off the most, answers too rarely to qualify
    assert sweeps.pick_training([r for r in rows if r["seed"] == 0]) == (48, 0.2)
    assert sweeps.pick_training(rows) == (48, 0.5)
    # none answers often enough: the setting that answers most, never "hand everything off"
    assert sweeps.pick_training(rows, min_answer_rate=0.95) == (48, 0.2)


def test_pick_training_refuses_test_rows_uneven_seeds_and_an_empty_sweep():
    rows = _training_rows()
    with pytest.raises(CourseError, match="dev split only"):
        sweeps.pick_training(rows + [_training_row(96, 0.2, 0, 1.0, 1.0, split="test")])
    with pytest.raises(CourseError, match="same seeds"):
        sweeps.pick_training(rows[:-1])
    with pytest.raises(CourseError, match="same seeds"):
        sweeps.pick_training(rows + [rows[0]])
    with pytest.raises(CourseError, match="make bench-handoff"):
        sweeps.pick_training([])


class _Tokenizer:
    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": text.split(" ")}

    def decode(self, ids):
        return " ".join(ids)


def test_a_smaller_token_budget_is_a_truncation_of_the_longer_reply():
    assert sweeps.truncated_reply(_Tokenizer(), "a b c d", 4, 2) == ("a b", 2)
    assert sweeps.truncated_reply(_Tokenizer(), "a b", 2, 8) == ("a b", 2)


class _FakeGenerator:
    """Replies that depend on the prompt only (as greedy decoding does)."""

    max_new_tokens = 16

    def generate(self, conversations, desc=None, **_):
        out = []
        for conv in conversations:
            user = conv[-1]["content"]
            ids = [line.split("]")[0][1:] for line in user.splitlines() if line.startswith("[")]
            answer = "It costs $4.99." if len(ids) == 1 else prompts.HANDOFF_ANSWER
            out.append(Generation(prompts.answer_json(answer, ids[:1], len(ids) != 1), len(user) // 4, 8, 0.1, 0.1))
        return out


class _FakeRetriever:
    def __init__(self, index, top_k=3):
        self.top_k = top_k

    def retrieve_many(self, questions):
        chunks = [[RetrievedChunk(f"kb-{len(q) % 7}", f"kb-{len(q) % 7}-{i}", 0.5, "text") for i in range(self.top_k)]
                  for q in questions]
        return chunks, [0.0] * len(questions)


def test_settings_are_chosen_from_dev_alone(monkeypatch):
    """The choice is the same when the test questions are removed from the data altogether."""
    monkeypatch.setattr(rag, "Retriever", _FakeRetriever)
    course = data.load_all()
    test_ids = {q.id for q in [*course.test.knowledge, *course.test.unanswerable]}
    without_test = dataclasses.replace(
        course, knowledge=tuple(q for q in course.knowledge if q.id not in test_ids),
        unanswerable=tuple(q for q in course.unanswerable if q.id not in test_ids),
        splits=(course.dev, dataclasses.replace(course.test, knowledge=(), unanswerable=())))
    runs = [sweeps.top_k_rows("rag", _FakeGenerator(), None, c.dev, questions=c.knowledge)
            for c in (course, without_test)]
    assert json.dumps(runs[0]) == json.dumps(runs[1])   # (json: NaN == NaN there)
    assert {r["n_knowledge"] for r in runs[0]} == {len(course.dev.knowledge)}
    assert sweeps.pick_top_k(runs[0], "rag") == sweeps.pick_top_k(runs[1], "rag") == 1


# --------------------------------------------------------------------------- the profiles follow the saved sweeps


@pytest.fixture(scope="module")
def saved():
    return sweeps.load_saved("cpu")


def test_saved_sweeps_were_measured_on_the_dev_split(saved):
    course = data.load_all()
    for row in saved["top_k"]["rows"]:
        assert row["split"] == "dev" and row["n_knowledge"] == len(course.dev.knowledge)
        assert row["n_unanswerable"] == len(course.dev.unanswerable)
    assert {r["top_k"] for r in saved["top_k"]["rows"]} == set(sweeps.TOP_K_CHOICES)


def test_cpu_profile_uses_the_top_k_and_token_limit_the_dev_sweeps_picked(saved):
    cpu = profiles.get_profile("cpu")
    rows = saved["top_k"]["rows"]
    assert cpu.retrieval_top_k == sweeps.pick_top_k(rows, "rag") == saved["top_k"]["picked"]["rag"]
    assert cpu.hybrid_top_k == sweeps.pick_top_k(rows, "hybrid") == saved["top_k"]["picked"]["hybrid"]
    assert cpu.max_new_tokens == sweeps.pick_max_new_tokens(saved["max_new_tokens"]["rows"])


def test_hybrid_top_k_was_swept_with_the_labs_current_adapter(saved):
    """The hybrid's top-k pick depends on the adapter: a new training pick makes it stale."""
    cpu = profiles.get_profile("cpu")
    assert saved["top_k"].get("adapter") == sweeps.adapter_settings(cpu), (
        "results/cpu/sweeps.json's hybrid top-k rows were measured with another adapter: run `make sweeps`")


def test_rerunning_one_system_keeps_the_other_systems_saved_rows():
    old = [_row("rag", 1, 0.3), _row("hybrid", 1, 0.2), _row("hybrid", 2, 0.1)]
    new = [_row("hybrid", 1, 0.25), _row("hybrid", 2, 0.4)]
    merged = sweeps.merge_system_rows(old, new)
    assert merged == [_row("rag", 1, 0.3), *new]
    assert sweeps.pick_top_k(merged, "hybrid") == 2 and sweeps.pick_top_k(merged, "rag") == 1


def test_cpu_profile_trains_the_length_and_data_mix_the_training_sweep_picked(saved):
    course = data.load_all()
    rows = saved["training"]["rows"]
    steps, share = sweeps.pick_training(rows)
    assert (steps, share) == (saved["training"]["picked"]["steps"], saved["training"]["picked"]["handoff_share"])
    assert profiles.get_profile("cpu").training.max_steps == steps
    assert data.FINETUNE_HANDOFF_SHARE == share
    picked = [r for r in rows if (r["steps"], r["handoff_share"]) == (steps, share)]
    assert {r["handoff_chats"] for r in picked} == {sum(e.kind == "handoff" for e in course.finetune_train)}
    # judged on the dev split, by the labs' hybrid, over several seeds that include the labs' own
    assert saved["training"]["top_k"] == profiles.get_profile("cpu").hybrid_top_k
    assert len(saved["training"]["seeds"]) >= 3 and profiles.TrainingSettings().seed in saved["training"]["seeds"]
    assert {(r["n_knowledge"], r["n_unanswerable"]) for r in rows} == {(len(course.dev.knowledge),
                                                                         len(course.dev.unanswerable))}


def test_cpu_profile_prompts_with_the_instruction_few_shot_k_and_answer_cap_the_dev_sweeps_picked(saved):
    cpu = profiles.get_profile("cpu")
    for section, column in (("few_shot", "few_shot_k"), ("constrained", "max_answer_chars")):
        rows = saved[section]["rows"]
        assert {r["split"] for r in rows} == {"dev"} and saved[section]["top_k"] == cpu.retrieval_top_k
        assert {r[column] for r in rows} == set(
            sweeps.FEW_SHOT_CHOICES if section == "few_shot" else sweeps.MAX_ANSWER_CHARS_CHOICES)
    assert cpu.few_shot_k == sweeps.pick_few_shot(saved["few_shot"]["rows"]) == saved["few_shot"]["picked"]
    assert cpu.constrained_max_answer_chars == sweeps.pick_max_answer_chars(saved["constrained"]["rows"]) \
        == saved["constrained"]["picked"]
    rows = saved["rag_instruction"]["rows"]
    assert {r["split"] for r in rows} == {"dev"} and saved["rag_instruction"]["top_k"] == cpu.retrieval_top_k
    assert {r["instruction"] for r in rows} == set(sweeps.RAG_INSTRUCTION_CHOICES)
    assert cpu.rag_instruction == sweeps.pick_rag_instruction(rows) == saved["rag_instruction"]["picked"]


def test_the_gate_pick_balances_hand_offs_against_answers_and_prefers_no_gate_on_a_tie():
    def row(t, refused, answered, split="dev"):
        return {"handoff_below": t, "refusal_accuracy": refused, "answer_rate_when_retrieved": answered, "split": split}

    rows = [row(0.0, 0.5, 0.8), row(0.4, 0.7, 0.7), row(0.5, 1.0, 0.2)]
    assert sweeps.pick_handoff_gate(rows) == 0.4                      # balance 0.65 / 0.70 / 0.60
    assert sweeps.pick_handoff_gate([row(0.0, 0.5, 0.9), row(0.4, 0.6, 0.8)]) == 0.0   # a tie: no gate
    with pytest.raises(CourseError, match="dev split only"):
        sweeps.pick_handoff_gate(rows + [row(0.45, 1.0, 1.0, split="test")])
    with pytest.raises(CourseError, match="make sweeps-gate"):
        sweeps.pick_handoff_gate([])


def test_the_gate_headline_quotes_the_rows_without_a_gate_and_at_the_pick():
    rows = [{"handoff_below": t, "refusal_accuracy": r, "answer_rate_when_retrieved": a, "split": "dev"}
            for t, r, a in ((0.0, 0.5, 0.8), (0.4, 0.8, 0.7), (0.5, 0.9, 0.3))]
    assert sweeps.gate_headline(rows) == {"gate_dev_threshold": 0.4, "gate_dev_refusal_without": 0.5,
                                          "gate_dev_refusal_with": 0.8, "gate_dev_answers_without": 0.8,
                                          "gate_dev_answers_with": 0.7}
    with pytest.raises(CourseError, match="no row without a gate"):
        sweeps.gate_headline(rows[1:])


def test_cpu_profile_gates_the_hybrid_where_the_dev_sweep_picked_with_the_labs_settings(saved):
    cpu = profiles.get_profile("cpu")
    section = saved["handoff_gate"]
    assert {r["split"] for r in section["rows"]} == {"dev"}
    assert {r["handoff_below"] for r in section["rows"]} == set(sweeps.HANDOFF_GATE_CHOICES)
    assert cpu.handoff_gate == sweeps.pick_handoff_gate(section["rows"]) == section["picked"]
    assert (section["top_k"], section["max_new_tokens"], section["adapter"]) == (
        cpu.hybrid_top_k, cpu.max_new_tokens, sweeps.adapter_settings(cpu)), (
        "the gate was chosen in front of another hybrid: re-run `make sweeps-gate`")


def test_prompt_sweeps_ran_with_the_profiles_token_limit(saved):
    """A pick made at another max_new_tokens is stale: re-run `make sweeps-prompt` after `make sweeps`."""
    cpu = profiles.get_profile("cpu")
    for section in ("rag_instruction", "few_shot", "constrained"):
        assert saved[section].get("max_new_tokens") == cpu.max_new_tokens == saved["max_new_tokens"]["picked"], (
            f"{section} was chosen at max_new_tokens={saved[section].get('max_new_tokens')}, the cpu profile "
            f"uses {cpu.max_new_tokens}: re-run `make sweeps-prompt`")


def test_missing_or_torn_sweeps_file_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(sweeps, "saved_path", lambda name: tmp_path / name / "sweeps.json")
    with pytest.raises(CourseError, match="make sweeps"):
        sweeps.load_saved("cpu")
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "sweeps.json").write_text('{"top_k": ')
    with pytest.raises(CourseError, match="not valid JSON"):
        sweeps.load_saved("cpu")


def test_a_profile_without_saved_sweeps_is_shown_the_cpu_ones_and_told_so(capsys):
    gpu_like = dataclasses.replace(profiles.get_profile("cpu"), name="no-such-profile")
    saved, own = sweeps.load_for(gpu_like)
    assert not own and saved == sweeps.load_saved("cpu")
    assert "No sweeps saved for the no-such-profile profile" in capsys.readouterr().out
    assert sweeps.load_for(profiles.get_profile("cpu"))[1]


def test_training_sweep_plot_draws_a_dot_per_seed_and_a_mean_per_setting():
    import matplotlib

    matplotlib.use("Agg")
    from ftrag import plots

    rows = _training_rows()
    fig = plots.training_sweep(rows, picked=(48, 0.5))
    ax = fig.axes[0]
    sizes = [len(c.get_offsets()) for c in ax.collections if c.get_offsets().size]
    assert sizes.count(1) == len(rows) + 4           # 12 seed dots + 4 setting means
    labels = ax.get_legend_handles_labels()[1]
    assert "48 steps, share 0.5: mean (picked)" in labels and "24 steps, share 0.2: mean" in labels


def test_training_headline_quotes_the_picked_setting_over_its_seeds():
    head = sweeps.training_headline(_training_rows())
    assert (head["training_pick_steps"], head["training_pick_share"]) == (48, 0.5)
    assert (head["training_settings_n"], head["training_seeds_n"], head["training_excluded_n"]) == (4, 3, 1)
    assert head["training_pick_refusal"] == pytest.approx(0.6)
    assert (head["training_pick_refusal_min"], head["training_pick_refusal_max"]) == (0.2, 0.9)
    assert head["training_pick_answers"] == pytest.approx(2 / 3)
    assert (head["training_runner_up_steps"], head["training_runner_up_share"]) == (48, 0.2)
    assert head["training_runner_up_refusal"] == pytest.approx(1.1 / 3)


def test_what_the_qlora_lab_says_about_the_training_sweep_holds_for_the_saved_one(saved):
    """Lab 2 describes the saved sweep in words (section lab-qlora-behaviour); if `make bench-handoff`
    is re-run and a claim no longer holds, rewrite that paragraph."""
    rows = saved["training"]["rows"]
    means = sweeps.training_means(rows)
    head = sweeps.training_headline(rows)
    # "the 0.5 mix, at either length, answered fewer than half ... so they were out"
    assert {(m["steps"], m["handoff_share"]) for m in means if m["answer_rate_when_retrieved"] < 0.5} == {
        (m["steps"], m["handoff_share"]) for m in means if m["handoff_share"] == 0.5}
    # "... on the thinner mix"; "<runner-up> steps on the same mix"
    assert head["training_pick_share"] == head["training_runner_up_share"] == min(m["handoff_share"] for m in means)
    # "the seeds of one setting lie further apart than the two settings' means"
    gap = head["training_pick_refusal"] - head["training_runner_up_refusal"]
    for key in ((head["training_pick_steps"], head["training_pick_share"]),
                (head["training_runner_up_steps"], head["training_runner_up_share"])):
        m = next(m for m in means if (m["steps"], m["handoff_share"]) == key)
        assert m["refusal_accuracy_max"] - m["refusal_accuracy_min"] > gap
    # "seed 0 alone would have picked 48 steps ... that run handed off on most unanswerable dev questions"
    seed0 = [r for r in rows if r["seed"] == 0]
    alone = sweeps.pick_training(seed0)
    assert alone[0] == 48 and alone != sweeps.pick_training(rows)
    assert next(r for r in seed0 if (r["steps"], r["handoff_share"]) == alone)["refusal_accuracy"] > 0.5


def test_what_the_rag_lab_says_about_the_top_k_sweep_holds_for_the_saved_one(saved):
    """Lab 1 describes the saved top-k sweep in words (section lab-rag-overload); if `make sweeps` is
    re-run and a claim no longer holds, rewrite that paragraph."""
    rows = {(r["system"], r["top_k"]): r for r in saved["top_k"]["rows"]}
    n = len(data.load_all().dev.knowledge)
    right = {key: round(r["knowledge_accuracy"] * n) for key, r in rows.items()}
    # "picked a single chunk for both systems ... 17 of 54 ... more than from two, three, five or ten"
    assert saved["top_k"]["picked"] == {"rag": 1, "hybrid": 1} and n == 54
    for system in ("rag", "hybrid"):
        assert right[(system, 1)] == 17 and all(right[(system, k)] < 17 for k in sweeps.TOP_K_CHOICES[1:])
    # "ten chunks made the prompt five times longer"
    assert round(rows[("rag", 10)]["prompt_tokens"] / rows[("rag", 1)]["prompt_tokens"]) == 5
    # "schema validity fell from 0.95 at one chunk to 0.17 at ten"
    assert (round(rows[("hybrid", 1)]["schema_validity"], 2), round(rows[("hybrid", 10)]["schema_validity"], 2)) == (0.95, 0.17)
    # "hand off ... 5 of 10, against 2 of 10 with two chunks ... (0.83 against 0.92)"
    assert [round(rows[("hybrid", k)]["refusal_accuracy"] * rows[("hybrid", k)]["n_unanswerable"]) for k in (1, 2)] == [5, 2]
    assert [round(rows[("hybrid", k)]["answer_rate_when_retrieved"], 2) for k in (1, 2)] == [0.83, 0.92]
    # "at one and two chunks the hybrid got 17 and 15 of 54 right"
    assert (right[("hybrid", 1)], right[("hybrid", 2)]) == (17, 15)


def test_the_gate_description_says_when_a_profile_has_no_gate():
    assert sweeps.gate_description(0.45) == "hand off below 0.45"
    assert "repeats the hybrid's" in sweeps.gate_description(0.0)
    gpu = profiles.gpu_profile_settings(profiles.DEFAULT_GPU_MODEL)   # no GPU here: its settings only
    assert sweeps.gate_description(gpu.handoff_gate) == sweeps.gate_description(0.0)

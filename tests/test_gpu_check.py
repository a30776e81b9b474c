"""The pieces of benchmarks/gpu_check.py, on a CPU: the architectures it reads, a random NF4 model
built from one at tiny scale and trained a step, the fits table, the predictions, the no-CUDA stop."""
import importlib.util

import pytest
import torch

from ftrag import encoding, gpu, profiles, training
from ftrag.paths import REPO_ROOT

from _tiny_models import tiny_architecture


def _script():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO_ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_known_architectures_are_the_published_qwen_configs():
    models = gpu.known_models()
    assert set(models) == {"Qwen/Qwen2.5-1.5B-Instruct", "Qwen/Qwen2.5-3B-Instruct", "Qwen/Qwen2.5-7B-Instruct"}
    seven = gpu.model_config(models["Qwen/Qwen2.5-7B-Instruct"])
    assert type(seven).__name__ == "Qwen2Config" and not seven.tie_word_embeddings
    assert (seven.hidden_size, seven.num_key_value_heads, seven.vocab_size) == (3584, 4, 152064)
    # parameter counts the model cards state: 1.54B, 3.09B, 7.61B
    with torch.device("meta"):
        from transformers import AutoModelForCausalLM

        counts = {m: AutoModelForCausalLM.from_config(gpu.model_config(a)).num_parameters() / 1e9
                  for m, a in models.items()}
    assert [round(c, 2) for c in counts.values()] == [1.54, 3.09, 7.62]


def test_predictions_grow_with_the_model_and_split_into_their_parts():
    training = profiles.gpu_profile_settings("x").training
    totals = [gpu.predict_qlora_memory(a, training).total for a in gpu.known_models().values()]
    assert totals == sorted(totals)
    small = gpu.predict_qlora_memory(gpu.known_models()["Qwen/Qwen2.5-1.5B-Instruct"], training)
    assert small.total == pytest.approx(sum(v for k, v in vars(small).items()))
    no_ckpt = gpu.predict_qlora_memory(gpu.known_models()["Qwen/Qwen2.5-1.5B-Instruct"],
                                       profiles.TrainingSettings(**{**vars(training), "gradient_checkpointing": False}))
    assert no_ckpt.activations > small.activations


def test_a_tiny_random_nf4_model_builds_from_its_config_and_trains(tmp_path):
    import bitsandbytes as bnb

    arch = tiny_architecture(500)
    model = gpu.build_nf4_model(arch, device="cpu", compute_dtype=torch.bfloat16)
    assert not [n for n, p in model.named_parameters() if p.device.type == "meta"]
    linears = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(linears) == 2 * 7 and all(m.weight.bnb_quantized for m in linears)
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied, as in the 1.5B config
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        peft_model = training.qlora_model(profiles.gpu_profile_settings("tiny"), model)
    # peft's use of transformers' old checkpointing names is silenced there (ftrag.harmless_messages)
    assert not [str(w.message) for w in caught if "gradient_checkpointing" in str(w.message)]
    batch = gpu.random_batch(500, 2, 32, 8, device="cpu")
    assert (batch["labels"][:, :24] == encoding.IGNORE_INDEX).all() and (batch["labels"][:, 24:] >= 0).all()
    before = [p.detach().clone() for p in peft_model.parameters() if p.requires_grad]
    timing = gpu.time_training_steps(peft_model, batch, steps=1, learning_rate=1e-2,
                                     compute_dtype=torch.bfloat16, device="cpu")
    after = [p for p in peft_model.parameters() if p.requires_grad]
    assert timing["seconds_per_step"] > 0 and timing["tokens_per_second"] > 0 and timing["loss"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(after, before))


def test_the_fits_table_reads_the_runs():
    runs = [{"model": "A", "card": "8 GB card", "peak_gib": 3.21},
            {"model": "B", "card": "8 GB card", "oom": True},
            {"model": "B", "card": "16 GB card (T4)", "error": "time budget spent"}]
    assert gpu.fits_table(runs) == {
        "A": {"8 GB card": "fits (peak 3.21 GiB)"},
        "B": {"8 GB card": "does not fit (out of memory)", "16 GB card (T4)": "not measured (time budget spent)"}}


def test_usable_memory_leaves_room_for_the_cuda_context():
    assert gpu.usable_bytes(8192) == (8192 - gpu.CUDA_CONTEXT_MIB) * 2**20


def test_without_cuda_the_script_stops_at_once_with_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "check.json"
    assert _script().main(["--out", str(out)]) == 2
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1 and "no CUDA GPU" in printed[0] and not out.exists()

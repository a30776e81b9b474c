"""The gpu profile's code path, on a CPU: a tiny random Qwen2 model with the shipped SmolLM2 tokenizer
(same <|im_start|>/<|im_end|> chat markers), loaded, quantised, trained, merged and evaluated with
the gpu profile's settings; the CUDA-only pieces with ``torch.cuda`` monkeypatched; and the bad
inputs that must stop before anything downloads."""
import dataclasses
import json
import shutil
from types import SimpleNamespace

import pytest
import torch

from ftrag import adapters, costs, gpu, profiles, training
from ftrag.errors import CourseError

from _tiny_models import gpu_profile_for_test, tiny_architecture

QWEN2_TARGETS = sorted(gpu.QWEN2_TARGETS)


@pytest.fixture(scope="module")
def tiny_qwen_dir(tmp_path_factory, cpu_profile):
    """A 2-block Qwen2ForCausalLM with random bf16 weights, saved like a hub checkpoint, no download."""
    from transformers import AutoModelForCausalLM

    tok = profiles.load_tokenizer(cpu_profile)
    config = gpu.model_config(tiny_architecture(len(tok)), bos_token_id=tok.bos_token_id,
                              eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).to(torch.bfloat16)
    folder = tmp_path_factory.mktemp("tiny-qwen2")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _gpu_like(monkeypatch, *, capability=(8, 0), total_gib=15.0, name="Tesla T4"):
    """Make torch.cuda look like a GPU of this capability and memory (nothing runs on it)."""
    import bitsandbytes  # noqa: F401  (imported for real first: with CUDA faked it looks for CUDA kernels)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: capability)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda *a: SimpleNamespace(name=name, total_memory=int(total_gib * 2**30)))


# --------------------------------------------------------------------------- CUDA-only pieces


@pytest.mark.parametrize("capability, dtype", [((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16),
                                               ((7, 5), torch.float16)])
def test_compute_dtype_follows_the_device_capability(monkeypatch, capability, dtype):
    _gpu_like(monkeypatch, capability=capability)
    profile = profiles.get_profile("gpu")
    assert profile.is_gpu and profiles.compute_dtype(profile) == dtype
    assert profiles.bnb_config(profile).bnb_4bit_compute_dtype == dtype


def test_peak_memory_on_gpu_is_what_pytorch_allocated(monkeypatch):
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a: 3_500_000_000)
    assert costs.peak_memory_mb("cuda") == pytest.approx(3500.0)


def test_the_gpu_profile_without_cuda_says_what_to_do(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(CourseError, match="FTRAG_PROFILE=cpu"):
        profiles.get_profile("gpu")


# --------------------------------------------------------------------------- bad input


def test_a_model_too_large_for_the_card_stops_and_names_a_smaller_one(monkeypatch):
    _gpu_like(monkeypatch, total_gib=8.0, name="GeForce RTX 3070")
    monkeypatch.setenv(profiles.GPU_MODEL_ENV, "Qwen/Qwen2.5-7B-Instruct")
    monkeypatch.setattr(profiles, "load_model", lambda *a, **k: pytest.fail("must stop before loading"))
    with pytest.raises(CourseError) as err:
        profiles.get_profile("gpu")
    assert "Qwen/Qwen2.5-7B-Instruct" in str(err.value) and "RTX 3070" in str(err.value)
    assert "FTRAG_GPU_MODEL=Qwen/Qwen2.5-3B-Instruct" in str(err.value)


def test_on_a_t4_the_7b_model_is_refused_for_its_16_bit_merge(monkeypatch):
    # QLoRA training of the 7B model is predicted to fit 15 GiB; its 15.2 GB of 16-bit weights for the merge do not
    _gpu_like(monkeypatch, total_gib=14.75)
    arch = gpu.known_models()["Qwen/Qwen2.5-7B-Instruct"]
    training = profiles.gpu_profile_settings("x").training
    assert gpu.predict_qlora_memory(arch, training).total < 14 * 2**30 < gpu.merged_weight_bytes(arch)
    monkeypatch.setenv(profiles.GPU_MODEL_ENV, "Qwen/Qwen2.5-7B-Instruct")
    with pytest.raises(CourseError, match="FTRAG_GPU_MODEL=Qwen/Qwen2.5-3B-Instruct"):
        profiles.get_profile("gpu")


@pytest.mark.parametrize("model, gib", [("Qwen/Qwen2.5-3B-Instruct", 8.0), ("Qwen/Qwen2.5-7B-Instruct", 24.0)])
def test_a_model_that_fits_is_accepted(monkeypatch, model, gib):
    _gpu_like(monkeypatch, total_gib=gib)
    monkeypatch.setenv(profiles.GPU_MODEL_ENV, model)
    assert profiles.get_profile("gpu").model_id == model


def test_no_known_model_fits_a_tiny_card(monkeypatch):
    _gpu_like(monkeypatch, total_gib=2.0)
    with pytest.raises(CourseError, match="FTRAG_PROFILE=cpu"):
        profiles.get_profile("gpu")


def test_an_unknown_model_is_not_guessed_at(monkeypatch, tmp_path):
    _gpu_like(monkeypatch, total_gib=2.0)
    monkeypatch.setenv(profiles.GPU_MODEL_ENV, str(tmp_path / "no-such-model"))
    assert profiles.get_profile("gpu").model_id.endswith("no-such-model")


def test_a_model_without_a_chat_template_stops_before_its_weights_load(tiny_qwen_dir, tmp_path):
    folder = tmp_path / "base-model"
    shutil.copytree(tiny_qwen_dir, folder)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").unlink()  # were the weights read, the error would be another one
    profile = gpu_profile_for_test(folder)
    for load in (profiles.load_tokenizer, profiles.load_model):
        with pytest.raises(CourseError, match="no chat template.*Qwen/Qwen2.5-1.5B-Instruct"):
            load(profile)


# --------------------------------------------------------------------------- the whole path, on a CPU


def test_the_test_profile_keeps_the_gpu_settings(tiny_qwen_dir, monkeypatch):
    _gpu_like(monkeypatch)
    real = profiles.get_profile("gpu")
    test = gpu_profile_for_test(tiny_qwen_dir)
    assert test.training == real.training and test.quantize_for_inference and test.name == "gpu"
    assert test.device == "cpu" and not test.is_gpu and profiles.compute_dtype(test) == torch.bfloat16
    assert real.test_compute_dtype is None


@pytest.mark.slow
def test_gpu_profile_end_to_end_on_a_tiny_qwen2(tiny_qwen_dir, tmp_path, monkeypatch):
    from ftrag import data, systems
    from ftrag.generation import Generator

    monkeypatch.setenv("FTRAG_CACHE_DIR", str(tmp_path / "cache"))  # replies cached here, not in .cache
    profile = gpu_profile_for_test(tiny_qwen_dir).with_training(max_steps=2, eval_every=2, train_examples=16)
    profile = dataclasses.replace(profile, max_new_tokens=16)  # random weights rarely stop: keep replies short

    # NF4 load, LoRA on the Qwen2 targets, gradient checkpointing
    model = training.qlora_model(profile)
    import bitsandbytes as bnb

    layers = [m for m in model.modules() if type(m) is bnb.nn.Linear4bit]
    assert len(layers) == 2 * 7 and {l.compute_dtype for l in layers} == {torch.bfloat16}
    assert sorted({name.split(".")[-1] for name, m in model.named_modules() if hasattr(m, "lora_A")}) == QWEN2_TARGETS
    assert model.base_model.model.is_gradient_checkpointing
    del model

    # training: padded batches of 8, two steps, adapter saved
    result = training.train_adapter(profile, data.load_finetune("train"), data.load_finetune("val"),
                                    output_dir=tmp_path / "adapter", progress=False)
    assert result.steps == 2 and len(result.train_losses) == 2 and result.examples == 16
    assert all(loss == loss and loss > 0 for _, loss in result.train_losses + result.val_losses)
    saved = json.loads((tmp_path / "adapter" / adapters.ADAPTER_CONFIG).read_text())
    assert sorted(saved["target_modules"]) == QWEN2_TARGETS and (saved["r"], saved["lora_alpha"]) == (16, 32)
    assert result.settings["batch_size"] == 8 and result.settings["gradient_checkpointing"]

    # reload and merge into the 16-bit base: the merged model answers like base + adapter
    unmerged = adapters.load_tuned(profile, tmp_path / "adapter", merge=False)
    merged = adapters.load_tuned(profile, tmp_path / "adapter")
    assert next(merged.parameters()).dtype == torch.bfloat16
    assert not any("lora_" in name for name, _ in merged.named_parameters())
    tok = profiles.load_tokenizer(profile)
    ids = torch.tensor([tok.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True,
                                                tokenize=True, return_dict=False)])
    with torch.no_grad():
        a, b = unmerged(input_ids=ids).logits.float(), merged(input_ids=ids).logits.float()
    assert (a - b).abs().max() < 0.1 * a.abs().max()

    # generation and evaluation through the systems the labs use
    course = data.load_all()
    questions = list(course.knowledge)[:2]
    items = [(q.id, q.question) for q in questions]
    base = systems.System("base", systems.base_generator(profile))
    tuned = systems.System("finetuned", systems.tuned_generator(profile, tmp_path / "adapter"))
    for system in (base, tuned):
        answers = system.ask(items)
        assert [a.question_id for a in answers] == [q.id for q in questions]
        assert all(a.reply.prompt_tokens > 0 and a.reply.new_tokens <= profile.max_new_tokens for a in answers)
        summary = systems.score(system.name, answers, questions).summary()
        assert 0.0 <= summary["knowledge_accuracy"] <= 1.0 and summary["prompt_tokens"] > 0
    assert isinstance(base.generator, Generator) and base.generator.model.is_loaded_in_4bit

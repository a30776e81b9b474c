"""Sizing the gpu profile without downloading a model: the architectures it knows, the GPU memory a
QLoRA run with its settings is predicted to need, which model fits which card, and the pieces of
``benchmarks/gpu_check.py`` (a random-weight NF4 model built from a config, timed training steps).

The architectures are data: ``gpu_models.json`` next to this module holds the published
``config.json`` values of Qwen2.5-1.5B/3B/7B-Instruct. Predictions are arithmetic on them
(:func:`predict_qlora_memory`); ``make gpu-check`` measures the same runs on a GPU.
"""
from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

from .errors import CourseError
from .memory import GIB, nf4_bits_per_param
from .paths import PACKAGE_DIR

MODELS_FILE = PACKAGE_DIR / "gpu_models.json"
MIB = 2**20
#: The cards the course is sized for, with the memory nvidia-smi lists for them (MiB).
CARDS: dict[str, int] = {"8 GB card": 8192, "16 GB card (T4)": 15360}
#: Memory the CUDA context and kernels take outside PyTorch's allocator (what
#: ``torch.cuda.max_memory_allocated`` does not see); an assumption, not a measurement.
CUDA_CONTEXT_MIB = 512
#: A padded micro-batch of the behaviour chats: the longest of the 358 training chats is 265 tokens
#: and the longest reply 68 (SmolLM2's tokenizer, counted 2026-12-02; Qwen's was not counted here).
CHAT_TOKENS = 320
REPLY_TOKENS = 72
#: Prompt plus reply of a retrieval question when generating (three passages): an assumption.
GENERATION_TOKENS = 1024
#: LoRA targets of a Qwen2 / Llama decoder block.
QWEN2_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


# --------------------------------------------------------------------------- architectures


@lru_cache(maxsize=1)
def known_models() -> dict[str, dict[str, Any]]:
    """``{hub id: config values}`` from ``gpu_models.json``."""
    try:
        return json.loads(MODELS_FILE.read_text(encoding="utf-8"))["models"]
    except (OSError, ValueError, KeyError) as exc:
        raise CourseError(f"{MODELS_FILE} is missing or malformed ({exc}); restore it from git.") from exc


def architecture(model_id: str) -> dict[str, Any] | None:
    """The config values of ``model_id``: from ``gpu_models.json``, else from a ``config.json``
    already in the local Hugging Face cache (never downloaded), else None."""
    if model_id in known_models():
        return dict(known_models()[model_id])
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(model_id, local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached, or not a model: nothing to predict from
        return None
    keys = ("model_type", "num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads",
            "vocab_size", "intermediate_size", "tie_word_embeddings")
    values = {k: getattr(config, k, None) for k in keys}
    return values if all(v is not None for v in values.values()) else None


def model_config(arch: Mapping[str, Any], **changes: Any):
    """A transformers config of ``arch`` (``model_type`` picks the class), with ``changes`` applied."""
    from transformers import AutoConfig

    values = {k: v for k, v in {**arch, **changes}.items() if not k.startswith("_")}
    return AutoConfig.for_model(values.pop("model_type"), **values)


# --------------------------------------------------------------------------- prediction


@dataclass(frozen=True)
class MemoryPrediction:
    """Predicted peak GPU memory of a QLoRA training step, in bytes, by what holds it."""

    nf4_weights: float      # the blocks' linear layers in NF4, block constants included
    other_weights: float    # embeddings, output head (when not tied), norms, biases: float32 after
                            # peft's prepare_model_for_kbit_training
    lora_states: float      # adapter weights, gradients and two AdamW moments, float32
    activations: float      # checkpointed block inputs + one block's recomputed activations
    logits: float           # reply positions x vocabulary, float32, with their gradient

    @property
    def total(self) -> float:
        return self.nf4_weights + self.other_weights + self.lora_states + self.activations + self.logits

    def as_gib(self) -> dict[str, float]:
        return {**{k: round(v / GIB, 3) for k, v in asdict(self).items()}, "total": round(self.total / GIB, 3)}


def _linear_shapes(arch: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    h, i = arch["hidden_size"], arch["intermediate_size"]
    head = arch.get("head_dim") or h // arch["num_attention_heads"]
    q, kv = arch["num_attention_heads"] * head, arch["num_key_value_heads"] * head
    return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
            "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}


def predict_qlora_memory(arch: Mapping[str, Any], training, *, batch: int | None = None,
                         seq_len: int = CHAT_TOKENS, reply_tokens: int = REPLY_TOKENS) -> MemoryPrediction:
    """Peak memory of one QLoRA step with ``training`` (a :class:`~ftrag.profiles.TrainingSettings`)
    on a model of ``arch``: ``batch`` rows (default: the micro-batch) of ``seq_len`` tokens, of which
    ``reply_tokens`` per row are supervised. Arithmetic, not a measurement: ``make gpu-check``
    measures the same run. The CUDA context is not included (see :data:`CUDA_CONTEXT_MIB`)."""
    layers, h, vocab = arch["num_hidden_layers"], arch["hidden_size"], arch["vocab_size"]
    shapes = _linear_shapes(arch)
    linear = layers * sum(a * b for a, b in shapes.values())
    biases = layers * (shapes["q_proj"][1] + 2 * shapes["k_proj"][1])  # Qwen2 has q/k/v biases
    embeddings = vocab * h * (1 if arch.get("tie_word_embeddings", True) else 2)
    norms = layers * 2 * h + h
    lora = layers * sum(training.lora_rank * (a + b) for a, b in shapes.values())
    micro = batch or training.micro_batch_size or training.batch_size
    tokens = micro * seq_len
    inter = arch["intermediate_size"]
    per_block = tokens * (6 * h + 4 * inter) * 2  # 16-bit activations of one block, forward + backward
    stored = layers * tokens * h * 4 if training.gradient_checkpointing else layers * per_block
    return MemoryPrediction(
        nf4_weights=linear * nf4_bits_per_param() / 8,
        other_weights=(embeddings + biases + norms) * 4,
        lora_states=lora * 16,
        activations=stored + per_block,
        logits=micro * reply_tokens * vocab * 4 * 3,
    )


def merged_weight_bytes(arch: Mapping[str, Any]) -> float:
    """The 16-bit weights of the whole model: what ``adapters.load_tuned`` holds on the GPU to merge
    an adapter (the labs generate with the merged model)."""
    shapes = _linear_shapes(arch)
    layers, h = arch["num_hidden_layers"], arch["hidden_size"]
    linear = layers * (sum(a * b for a, b in shapes.values()) + shapes["q_proj"][1] + 2 * shapes["k_proj"][1])
    embeddings = arch["vocab_size"] * h * (1 if arch.get("tie_word_embeddings", True) else 2)
    return (linear + embeddings + layers * 2 * h + h) * 2


def kv_cache_bytes(arch: Mapping[str, Any], rows: int, tokens: int = GENERATION_TOKENS) -> float:
    """16-bit key/value cache of ``rows`` replies generated at once, ``tokens`` long each."""
    shapes = _linear_shapes(arch)
    return rows * tokens * arch["num_hidden_layers"] * 2 * shapes["k_proj"][1] * 2


def predicted_need(arch: Mapping[str, Any], training, generation_rows: int = 16) -> float:
    """Bytes the labs need on the GPU at their peak: QLoRA training, or the merged 16-bit model
    generating ``generation_rows`` replies at once (the gpu profile's generation batch)."""
    return max(predict_qlora_memory(arch, training).total,
               merged_weight_bytes(arch) + kv_cache_bytes(arch, generation_rows))


def usable_bytes(card_mib: float) -> float:
    """What PyTorch may allocate on a card of ``card_mib``: its memory less the CUDA context."""
    return (card_mib - CUDA_CONTEXT_MIB) * MIB


def check_model_fits(profile) -> None:
    """Raise :class:`CourseError` when ``profile.model_id`` is predicted not to fit this GPU
    (:func:`predicted_need`), naming the largest known model that does. Silent when the model's architecture is
    unknown (not in ``gpu_models.json`` and not in the local cache: nothing to predict from)."""
    import torch

    arch = architecture(profile.model_id)
    if arch is None:
        return
    props = torch.cuda.get_device_properties(0)
    limit = props.total_memory - CUDA_CONTEXT_MIB * MIB
    need = predicted_need(arch, profile.training, profile.generation_batch_size)
    if need <= limit:
        return
    fitting = [m for m, a in known_models().items()
               if predicted_need(a, profile.training, profile.generation_batch_size) <= limit]
    instead = (f"Pick a smaller model instead: `export FTRAG_GPU_MODEL={fitting[-1]}`"
               if fitting else "None of the course's models fits it either: use FTRAG_PROFILE=cpu")
    raise CourseError(
        f"{profile.model_id} is predicted to need about {need / GIB:.1f} GiB of GPU memory (from its config: "
        f"QLoRA training with a batch of {profile.training.batch_size}, or the 16-bit model the labs merge "
        f"the adapter into while it generates, whichever is larger), and this GPU ({props.name}) has {props.total_memory / GIB:.1f} GiB. "
        f"{instead} (or unset it for the default), then restart the kernel.")


# --------------------------------------------------------------------------- measuring (gpu_check)


def build_nf4_model(arch: Mapping[str, Any], *, device: str, compute_dtype, seed: int = 0, **changes: Any):
    """A causal LM of ``arch`` with random weights, its blocks' linear layers in NF4 as the gpu
    profile loads them, built without a checkpoint: the model is created on the meta device, the
    linear layers are swapped for bitsandbytes' ``Linear4bit`` (transformers' own replacement) and
    each is filled with random 16-bit weights on ``device`` and quantised there, one at a time, so
    the full 16-bit model never exists in memory."""
    import bitsandbytes as bnb
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig
    from transformers.integrations.bitsandbytes import replace_with_bnb_linear

    config = model_config(arch, **changes)
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=compute_dtype)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=compute_dtype)
    replace_with_bnb_linear(model, modules_to_not_convert=["lm_head"], quantization_config=quant)
    gen = torch.Generator(device=device).manual_seed(seed)
    std = getattr(config, "initializer_range", 0.02)
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            w = torch.randn(module.out_features, module.in_features, generator=gen, device=device,
                            dtype=compute_dtype) * std
            module.weight = bnb.nn.Params4bit(w, requires_grad=False, quant_type="nf4", compress_statistics=True,
                                              module=module).to(device)
            if module.bias is not None:
                module.bias = torch.nn.Parameter(torch.zeros(module.out_features, device=device, dtype=compute_dtype),
                                                 requires_grad=False)
    for name, param in list(model.named_parameters()):
        if param.device.type != "meta":
            continue
        owner = model.get_submodule(name.rsplit(".", 1)[0])
        fill = (torch.ones if "norm" in name else torch.zeros)(param.shape, device=device, dtype=compute_dtype)
        if "embed" in name or name.startswith("lm_head"):
            fill = torch.randn(param.shape, generator=gen, device=device, dtype=compute_dtype) * std
        setattr(owner, name.rsplit(".", 1)[1], torch.nn.Parameter(fill, requires_grad=False))
    for name, buf in list(model.named_buffers()):
        if buf.device.type == "meta":  # rotary frequencies: computed from the config, not random
            path = name.rsplit(".", 1)[0]
            owner = model.get_submodule(path)
            model.set_submodule(path, type(owner)(owner.config).to(device))
    if config.tie_word_embeddings:
        model.tie_weights()
    model.is_loaded_in_4bit = True  # what transformers' bnb quantizer marks; peft reads it
    return model


def random_batch(vocab_size: int, rows: int, seq_len: int, reply_tokens: int, *, device: str, seed: int = 0):
    """Random token rows shaped like a padded batch of chats: the last ``reply_tokens`` of each row
    supervised, the rest masked as prompt."""
    import torch

    from .encoding import IGNORE_INDEX

    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (rows, seq_len), generator=gen)
    labels = ids.clone()
    labels[:, : seq_len - reply_tokens] = IGNORE_INDEX
    return {k: v.to(device) for k, v in
            {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}.items()}


def time_training_steps(model, batch: Mapping[str, Any], *, steps: int, learning_rate: float, compute_dtype,
                        device: str) -> dict[str, float]:
    """Run ``steps`` optimizer steps of the reply-only loss on ``batch`` (AdamW over the trainable
    parameters, autocast to ``compute_dtype`` as the Trainer does) and time them. The first step is
    a warm-up and not timed; returns seconds per step, tokens per second and the last loss."""
    import torch

    from .cpu_speedups import reply_only_loss

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=learning_rate)
    model.train()
    times, loss = [], float("nan")
    for step in range(steps + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(device_type=device, dtype=compute_dtype, enabled=compute_dtype != torch.float32):
            value = reply_only_loss(model, batch)
        value.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        loss = float(value.detach())
        if step:
            times.append(time.perf_counter() - t0)
    per_step = sum(times) / len(times) if times else float("nan")
    tokens = batch["input_ids"].numel()
    return {"seconds_per_step": per_step, "tokens_per_second": tokens / per_step if times else float("nan"),
            "loss": loss}


def fits_table(runs: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    """``{model: {card: verdict}}`` from measured runs (``model``, ``card``, and ``peak_gib`` or
    ``oom``): "fits (peak X GiB)" or "does not fit (out of memory)"; a run that failed otherwise
    says so rather than counting as either."""
    table: dict[str, dict[str, str]] = {}
    for run in runs:
        if run.get("oom"):
            verdict = "does not fit (out of memory)"
        elif run.get("error"):
            verdict = f"not measured ({run['error']})"
        else:
            verdict = f"fits (peak {run['peak_gib']:.2f} GiB)"
        table.setdefault(run["model"], {})[run["card"]] = verdict
    return table

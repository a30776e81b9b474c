"""QLoRA fine-tuning: chat examples with loss masking, adapter training, caching, loading, merging.

The recipe (Dettmers et al., 2023): load the base model in 4-bit NF4 with double quantisation,
freeze it, add LoRA adapters (Hu et al., 2021) to every linear layer of the decoder blocks (or of
the upper ones only: :func:`adapted_blocks`) and train only those. The loss is computed on the
assistant's reply only: the system prompt, the context and the question are masked with ``-100``
so the model learns *how to answer*, not how to write questions.

Adapters are cached under ``<cache>/adapters/<name>-<hash>``; the hash covers the training data,
the training settings and the base model, so changing any of them trains a new adapter and a
re-run of a lab (or the book build after ``make test``) reuses the stored one.

For inference the adapter is loaded onto the *full-precision* base and merged into it
(:func:`load_tuned`). Merging into the 4-bit base would round ``W + BA`` back to NF4, and the
small LoRA update is mostly lost in that rounding.
"""
from __future__ import annotations

import gc
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import CourseError, DataError
from .evaluate import evenly_spaced  # noqa: F401  (re-exported: the labs call finetune.evenly_spaced)
from .paths import cache_dir

#: Bump when the way examples are encoded or trained changes: it is part of the adapter cache key.
FORMAT_VERSION = 1
ADAPTER_FILE = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
METRICS_FILE = "training.json"
IGNORE_INDEX = -100
MB = 10**6  # sizes are reported in MB and GB (powers of ten), like file sizes
SEED = 0
#: The validation loss is computed on at most this many validation examples, evenly spaced through
#: the file (every ``eval_every`` steps a forward pass over all 85 would cost more than training).
#: On 2 cores each evaluation of 16 took about 7 s, four of them a fifth of the behaviour run; 8
#: halve that, and the loss still falls from about 2.5 to 0.4, far beyond its noise.
VAL_LOSS_EXAMPLES = 8


# --------------------------------------------------------------------------- examples -> tensors


def _messages_of(example: Any) -> list[dict[str, str]]:
    messages = getattr(example, "messages", example)
    return [dict(m) for m in messages]


def _id_of(example: Any, default: str) -> str:
    return str(getattr(example, "id", None) or default)


def encode_example(tokenizer, messages, max_len: int, *, example_id: str | None = None) -> dict[str, list[int]]:
    """Tokenise one chat example for causal-LM training with the loss on the reply only.

    ``messages`` is a list of chat messages ending with the assistant turn (or an object with
    ``.messages`` and ``.id``, such as :class:`ftrag.data.ChatExample`). The prompt is the chat
    template of the earlier turns with the generation prompt (``<|im_start|>assistant\\n``); the
    labels are ``-100`` there and equal to the input ids on the reply *and on the end-of-turn token*
    (the tokenizer's eos, ``<|im_end|>``). The pad token is the same token, so it must never be
    masked by "ignore the pad id": a model that never learns to emit it never stops talking.

    Raises :class:`DataError` (``"<id>: ..."``) for an example without a final assistant turn and
    for one longer than ``max_len`` tokens: silently truncating would cut off the end of the
    reply and its end-of-turn token.
    """
    ex_id = example_id or _id_of(messages, "example")
    msgs = _messages_of(messages)
    if not msgs or msgs[-1].get("role") != "assistant":
        raise DataError(f"{ex_id}: the last message must be the assistant's reply (the training target), "
                        f"got roles {[m.get('role') for m in msgs]}.")
    reply = msgs[-1].get("content")
    if not isinstance(reply, str) or not reply.strip():
        raise DataError(f"{ex_id}: the assistant reply is empty.")
    if len(msgs) < 2 or not any(m.get("role") == "user" for m in msgs[:-1]):
        raise DataError(f"{ex_id}: there is no user turn before the assistant reply.")
    eos = tokenizer.eos_token
    if not eos:
        raise CourseError("The tokenizer has no eos token; the chat format needs one to end a reply.")
    prompt = list(tokenizer.apply_chat_template(msgs[:-1], add_generation_prompt=True, tokenize=True,
                                                return_dict=False))
    answer = list(tokenizer(reply + eos, add_special_tokens=False)["input_ids"])
    if not answer or answer[-1] != tokenizer.eos_token_id:
        raise DataError(f"{ex_id}: the reply does not tokenise to end with the end-of-turn token {eos!r}.")
    ids = prompt + answer
    if len(ids) > max_len:
        raise DataError(f"{ex_id}: {len(ids)} tokens, longer than max_seq_len={max_len} "
                        f"(prompt {len(prompt)}, reply {len(answer)}). Shorten the example or raise "
                        "max_seq_len in the profile's training settings; it is never truncated.")
    return {"input_ids": ids, "attention_mask": [1] * len(ids),
            "labels": [IGNORE_INDEX] * len(prompt) + answer}


def encode_examples(tokenizer, examples: Sequence[Any], max_len: int) -> list[dict[str, list[int]]]:
    return [encode_example(tokenizer, ex, max_len, example_id=_id_of(ex, f"example {i}"))
            for i, ex in enumerate(examples)]


# --------------------------------------------------------------------------- LoRA targets


def _block_index(path: str) -> int | None:
    """Index of the numbered decoder block a module path goes through (``model.layers.7.mlp`` -> 7)."""
    return next((int(p) for p in path.split(".") if p.isdigit()), None)


def block_linears(model, last_blocks: int | None = None) -> list[tuple[str, Any]]:
    """``(path, module)`` of every linear layer inside the repeated decoder blocks: the layers
    QLoRA quantises to 4 bits and puts adapters on.

    Read from the model itself: every leaf ``nn.Linear`` (bitsandbytes' ``Linear4bit`` is one) whose
    path goes through a numbered block (``model.layers.7.mlp.up_proj``). The output head, the
    embeddings and any LoRA layers already present are left out. ``last_blocks=N`` keeps only the
    layers of the last N blocks (those :func:`adapted_blocks` adapts).
    """
    import torch.nn as nn

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    found = []
    for path, module in model.named_modules():
        if not isinstance(module, nn.Linear) or module is head or list(module.children()):
            continue
        parts = path.split(".")
        if "lora_" in path or parts[-1] == "lm_head" or _block_index(path) is None:
            continue
        found.append((path, module))
    if not found:
        raise CourseError(f"No linear layers found in the decoder blocks of {type(model).__name__}; "
                          "LoRA needs them as targets.")
    if last_blocks is None:
        return found
    keep = set(_last_blocks(found, last_blocks))
    return [(path, module) for path, module in found if _block_index(path) in keep]


def _last_blocks(found: list[tuple[str, Any]], last_blocks: int) -> list[int]:
    """Indices of the last ``last_blocks`` blocks among the :func:`block_linears` ``found``."""
    n_blocks = 1 + max(_block_index(path) for path, _ in found)
    if not 1 <= last_blocks <= n_blocks:
        raise CourseError(f"adapted_blocks={last_blocks} does not fit a model with {n_blocks} decoder blocks: "
                          f"use a number from 1 to {n_blocks}, or None for all of them.")
    return list(range(n_blocks - last_blocks, n_blocks))


def adapted_blocks(model, last_blocks: int | None) -> list[int] | None:
    """Indices of the decoder blocks that get adapters: the last ``last_blocks`` of them, or
    ``None`` (peft's "every block") when ``last_blocks`` is None.

    Adapting only the upper blocks is a speed-up: no parameter below them needs a gradient, so the
    backward pass stops there (measured on the cpu profile, no gradient checkpointing: 3.7-4.0 s
    per step with the last 15 of 30 blocks vs 6.0-7.5 s with all of them). It has a price: that
    adapter broke the JSON format on most prompts unlike its training chats, so no profile uses it.
    """
    return None if last_blocks is None else _last_blocks(block_linears(model), last_blocks)


def lora_target_modules(model) -> list[str]:
    """Names (e.g. ``q_proj``, ``down_proj``) of the :func:`block_linears`, as peft's ``target_modules``."""
    return sorted({path.split(".")[-1] for path, _ in block_linears(model)})


# --------------------------------------------------------------------------- memory helpers


def weight_memory_mb(model) -> float:
    """Memory of the model's weights and buffers in MB (10**6 bytes, ``get_memory_footprint``)."""
    return model.get_memory_footprint() / MB


def adapter_size_mb(adapter_dir: str | os.PathLike) -> float:
    """Size of the saved adapter weights (``adapter_model.safetensors``) in MB (10**6 bytes)."""
    path = Path(adapter_dir) / ADAPTER_FILE
    if not path.exists():
        raise CourseError(f"No adapter in {adapter_dir} ({ADAPTER_FILE} is missing).")
    return path.stat().st_size / MB


def peak_memory_mb(device: str = "cpu") -> float:
    """Peak memory so far in MB (10**6 bytes): the process's peak resident set size on CPU, the
    peak memory allocated by PyTorch on a CUDA device."""
    if device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated() / MB
    from .results import peak_memory_gb  # this process's own peak (VmHWM on Linux, see there)

    return peak_memory_gb() * 1e9 / MB


def tokens_per_second(generations: Iterable[Any]) -> float:
    """Generated tokens per second of wall time over a list of :class:`~ftrag.generation.Generation`."""
    gens = list(generations)
    seconds = sum(g.seconds for g in gens)
    return sum(g.new_tokens for g in gens) / seconds if seconds > 0 else float("nan")


def quantizable_params(model) -> tuple[int, int]:
    """``(params in the decoder blocks' linear layers, all other params)`` of a full-precision model.

    bitsandbytes turns exactly those linear layers (:func:`block_linears`) into 4-bit; the
    embeddings, the output head (tied to the embeddings in small models), the norms and biases keep
    the compute dtype.
    """
    linear = sum(module.weight.numel() for _, module in block_linears(model))
    total = sum(p.numel() for p in model.parameters())
    return linear, total - linear


def memory_comparison(full_model, nf4_model, *, full_bits: int | None = None) -> list[dict[str, Any]]:
    """Measured weight memory of the full-precision and the 4-bit model next to the formula
    ``n_params * bits / 8`` (:func:`ftrag.memory.weight_bytes`), in MB (10**6 bytes).

    Three formula rows: everything at full precision; everything at 4 bits (the headline
    figure); and what NF4 really stores: the linear layers at 4 bits plus the double-quantised block
    constants (:func:`ftrag.memory.nf4_bits_per_param`), everything else at full precision.
    """
    from .memory import nf4_bits_per_param, weight_bytes

    if full_bits is None:
        full_bits = next(full_model.parameters()).element_size() * 8
    linear, other = quantizable_params(full_model)
    n = linear + other
    return [
        {"weights": f"full precision ({full_bits}-bit)", "kind": "formula", "MB": weight_bytes(n, full_bits) / MB},
        {"weights": f"full precision ({full_bits}-bit)", "kind": "measured", "MB": weight_memory_mb(full_model)},
        {"weights": "all weights at 4 bits", "kind": "formula", "MB": weight_bytes(n, 4) / MB},
        {"weights": "4-bit NF4 (linear layers only)", "kind": "formula",
         "MB": (weight_bytes(linear, nf4_bits_per_param()) + weight_bytes(other, full_bits)) / MB},
        {"weights": "4-bit NF4 (linear layers only)", "kind": "measured", "MB": weight_memory_mb(nf4_model)},
    ]


def nf4_merge_loss(peft_model) -> dict[str, float]:
    """How much of the LoRA update survives a merge into a 4-bit base, over every LoRA layer.

    For each layer with base weight ``W`` and update ``D = (alpha/r) B A``: the 4-bit base holds
    ``Q(W)`` (quantise to NF4 and back); merging and storing back in 4-bit gives ``Q(Q(W) + D)``.
    ``kept = Q(Q(W) + D) - Q(W)`` is the update that survives. Returned: the mean relative error
    ``|kept - D| / |D|`` (``update_lost_nf4``; norms are Frobenius norms), the mean relative size of
    the update ``|D| / |W|``, and the same error for a merge into the full-precision weights (0).
    An error of 1.0 is what dropping the update entirely would give (``kept = 0``). It exceeds 1.0
    when re-quantising moves some weights to a neighbouring NF4 level, or changes a block's scale
    constant, by more than the update: the change stored in 4 bits is then further from ``D``
    than no change at all, because the rounding noise is larger than the update itself.
    """
    import bitsandbytes.functional as F
    import torch

    def q(w):
        packed, state = F.quantize_4bit(w.float().contiguous(), quant_type="nf4", compress_statistics=True)
        return F.dequantize_4bit(packed, state).to(w.dtype)

    errors, sizes, full_errors = [], [], []
    with torch.no_grad():
        for module in peft_model.modules():
            if not (hasattr(module, "get_delta_weight") and hasattr(module, "base_layer")):
                continue
            for adapter in getattr(module, "active_adapters", []):
                if adapter not in getattr(module, "lora_A", {}):
                    continue
                w = module.base_layer.weight
                if w.dtype not in (torch.float32, torch.float16, torch.bfloat16):
                    raise CourseError("nf4_merge_loss needs the adapter on a full-precision base (load_tuned(merge=False)).")
                w = w.detach().float()
                delta = module.get_delta_weight(adapter).detach().float()
                base_q = q(w)
                kept = q(base_q + delta) - base_q
                norm = delta.norm().item()
                if norm == 0:
                    continue
                errors.append(((kept - delta).norm() / norm).item())
                full_errors.append((((w + delta) - w - delta).norm() / norm).item())
                sizes.append(norm / w.norm().item())
    if not errors:
        raise CourseError("No LoRA layers with a non-zero update found.")
    return {"layers": len(errors), "update_lost_nf4": sum(errors) / len(errors),
            "update_lost_full": sum(full_errors) / len(full_errors),
            "update_relative_size": sum(sizes) / len(sizes)}


# --------------------------------------------------------------------------- training


@dataclass
class TrainResult:
    """What a training run produced and measured (also stored as ``training.json`` in the adapter).

    ``seconds`` is the wall time of the whole run, periodic validation included;
    ``seconds_per_step`` the mean wall time of one optimizer step (forward, backward, update).
    ``peak_memory_mb`` is the process's peak resident memory on CPU (everything the process held
    before training counts too), the peak memory PyTorch allocated on a GPU.
    """

    adapter_dir: str
    train_losses: list[tuple[int, float]]
    val_losses: list[tuple[int, float]]
    seconds: float
    seconds_per_step: float
    steps: int
    peak_memory_mb: float
    trainable_params: int
    total_params: int
    settings: dict[str, Any]
    cached: bool = False
    examples: int = 0
    device: str = "cpu"

    @property
    def trainable_share(self) -> float:
        return self.trainable_params / self.total_params if self.total_params else float("nan")

    def coverage(self) -> str:
        """What the optimizer steps read, in words: ``"24 steps of 4 chats: 96 of the 358 training
        chats, once each"``, or the number of passes when the steps read the data more than once."""
        batch = int(self.settings.get("batch_size") or 0)
        if batch <= 0 or self.examples <= 0:
            return f"{self.steps} steps"
        read = self.steps * batch
        head = f"{self.steps} steps of {batch} chats"
        if read <= self.examples:
            return f"{head}: {read} of the {self.examples} training chats, once each"
        return f"{head}: {read / self.examples:.1f} passes over the {self.examples} training chats"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("cached")
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, adapter_dir: str, cached: bool) -> "TrainResult":
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["train_losses"] = [tuple(x) for x in fields.get("train_losses", [])]
        fields["val_losses"] = [tuple(x) for x in fields.get("val_losses", [])]
        fields.update(adapter_dir=str(adapter_dir), cached=cached)
        return cls(**fields)


def _settings_dict(profile) -> dict[str, Any]:
    # model_description, stored under "model_id": the base's id and where its weights come from (as
    # the cpu profile's model_id spelled it before weights_source existed: adapter keys stay the same)
    return {**asdict(profile.training), "model_id": profile.model_description, "device": profile.device,
            "seed": SEED, "val_loss_examples": VAL_LOSS_EXAMPLES}


def release_freed_memory() -> bool:
    """Hand memory that the C allocator keeps after ``free`` back to the OS (``malloc_trim``).

    A CPU training step allocates and frees about a gigabyte of activations; glibc keeps the freed
    blocks, so the process's resident memory stays near its peak after training. Only Linux/glibc;
    returns whether it ran. (Forcing every large block through ``mmap`` with ``mallopt`` instead
    keeps the peak lower, but made each step 1.7x slower and slowed generation afterwards.)
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        return bool(ctypes.CDLL("libc.so.6").malloc_trim(0))
    except (OSError, AttributeError):
        return False


def _progress_callback(total: int, enabled: bool):
    from tqdm.auto import tqdm
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        """One tqdm bar with the latest training and validation loss (instead of Trainer's printing)."""

        def __init__(self):
            self.bar = None
            self.postfix: dict[str, str] = {}
            self.step_seconds: list[float] = []  # optimizer steps only, without the evaluations
            self._t0 = 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            self.bar = tqdm(total=total, desc="training", disable=not enabled)

        def on_step_begin(self, args, state, control, **kwargs):
            self._t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.step_seconds.append(time.perf_counter() - self._t0)
            self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args, state, control, logs=None, **kwargs):
            for key, label in (("loss", "loss"), ("eval_loss", "val")):
                if logs and key in logs:
                    self.postfix[label] = f"{logs[key]:.3f}"
            if self.bar is not None and self.postfix:
                self.bar.set_postfix(self.postfix, refresh=False)

        def on_train_end(self, args, state, control, **kwargs):
            self.bar.close()

    return Progress()


def _supervised_positions(labels):
    """``(keep, targets)``: a bool mask of the positions whose next token is supervised, and those
    next tokens in order (position ``i`` predicts token ``i + 1``)."""
    targets = labels[:, 1:]
    keep = labels.new_zeros(labels.shape, dtype=bool)
    keep[:, :-1] = targets != IGNORE_INDEX
    return keep, targets[targets != IGNORE_INDEX]


def _reply_logits(model, inputs) -> Any:
    keep, _ = _supervised_positions(inputs["labels"])
    batch = {k: v for k, v in inputs.items() if k != "labels"}
    logits = model(**batch, logits_to_keep=keep).logits
    return logits.reshape(-1, logits.shape[-1])


def reply_only_loss(model, inputs) -> Any:
    """Mean cross-entropy over the supervised (reply) tokens, projecting only those positions onto
    the vocabulary.

    The default causal-LM loss computes logits for every position (batch x length x 49k-152k
    vocabulary floats) and then ignores the masked prompt. Here the hidden states of the positions
    that predict a supervised token are selected *before* the output head (``logits_to_keep`` as a
    boolean mask), which gives the same loss with a fraction of the head's time and memory.
    """
    import torch.nn.functional as F

    _, targets = _supervised_positions(inputs["labels"])
    return F.cross_entropy(_reply_logits(model, inputs).float(), targets)


def teacher_forcing_row(tokenizer, conversations: Sequence[Sequence[dict[str, str]]], replies: Sequence[Any],
                        max_len: int) -> dict[str, Any]:
    """The ``conversations`` with ``replies`` (texts or generations) as their assistant turns,
    encoded like training chats (:func:`encode_example`) and packed into one row
    (:func:`pack_shared_prefix`): what :func:`reply_logits` reads to score a reply without decoding it."""
    if len(conversations) != len(replies) or not replies:
        raise CourseError(f"teacher_forcing_row needs one reply per conversation (got {len(replies)} replies "
                          f"for {len(conversations)} conversations).")
    chats = [list(c) + [{"role": "assistant", "content": _text(r)}] for c, r in zip(conversations, replies)]
    return pack_shared_prefix(encode_examples(tokenizer, chats, max_len))


def reply_logits(model, row) -> Any:
    """The model's float32 logits at every position that predicts a reply token of ``row`` (one row
    per reply token, the end-of-turn included; no gradients). Greedy decoding writes the top token
    of these at each step."""
    import torch

    with torch.no_grad():
        return _reply_logits(model, row).float()


def next_token_agreement(logits_a, logits_b) -> dict[str, float]:
    """Do two models pick the same next token along the same replies?

    ``same_next_token``: share of positions where both rank the same token first. If it is 1.0 on
    replies that model A wrote greedily, model B would write them too, token for token.
    ``max_logit_diff``: the largest gap between their logits; ``smallest_top_margin``: the
    narrowest lead of A's top token over its runner-up (a tie closer than the logit gap could flip).
    """
    if logits_a.shape != logits_b.shape or not logits_a.numel():
        raise CourseError(f"next_token_agreement needs logits of the same non-empty shape, got "
                          f"{tuple(logits_a.shape)} and {tuple(logits_b.shape)}.")
    top2 = logits_a.topk(2, dim=-1).values
    return {"positions": int(logits_a.shape[0]),
            "same_next_token": (logits_a.argmax(-1) == logits_b.argmax(-1)).float().mean().item(),
            "max_logit_diff": (logits_a - logits_b).abs().max().item(),
            "smallest_top_margin": (top2[:, 0] - top2[:, 1]).min().item()}


def _trainer_class():
    from transformers import Trainer

    class ReplyLossTrainer(Trainer):
        """Trainer whose loss is :func:`reply_only_loss` (same value, cheaper output head)."""

        # The loss is the mean over one micro-batch: with gradient accumulation, Trainer divides it
        # by the number of micro-batches (transformers asks subclasses with their own loss to say so).
        loss_is_scaled_for_ga = False

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = reply_only_loss(model, inputs)
            return (loss, {}) if return_outputs else loss  # no logits: prediction_loss_only

    return ReplyLossTrainer


def pack_shared_prefix(features: Sequence[dict[str, list[int]]]) -> dict[str, Any]:
    """One training row for a micro-batch of encoded chats: the prompt prefix they share, once, then
    each chat's own tokens (*prefix sharing*, the training-side twin of generation's prefix cache).

    Every chat in the course opens with the same ~80-token system prompt. Padded into a batch, each
    row runs it through the model again; packed, it runs once, and a 4D attention mask lets every
    chat's tokens see the prefix and their own earlier tokens only, with the positions they would
    have on their own. Loss and gradients are those of the padded batch (the unit tests compare
    them); a step of four behaviour chats read 525 tokens instead of 842 in `make bench`, in one pass
    instead of two.

    The prefix is cut from the *prompts* and leaves each chat at least one prompt token of its own,
    so no supervised token is ever predicted across a chat boundary.
    """
    import torch

    from .generation import shared_prefix_length

    if not features:
        raise CourseError("pack_shared_prefix got an empty micro-batch.")
    prompts = [[t for t, lab in zip(f["input_ids"], f["labels"]) if lab == IGNORE_INDEX] for f in features]
    for f, prompt in zip(features, prompts):
        if f["labels"][: len(prompt)] != [IGNORE_INDEX] * len(prompt):
            raise CourseError("pack_shared_prefix needs examples whose labels mask exactly a leading prompt "
                              "(use encode_example).")
    shared = shared_prefix_length(prompts)
    ids, labels = list(features[0]["input_ids"][:shared]), [IGNORE_INDEX] * shared
    positions, owner = list(range(shared)), [-1] * shared  # owner -1: the shared prefix
    for k, f in enumerate(features):
        own = list(f["input_ids"][shared:])
        ids += own
        labels += list(f["labels"][shared:])
        positions += range(shared, shared + len(own))
        owner += [k] * len(own)
    owner_t = torch.tensor(owner)
    n = len(ids)
    visible = torch.ones(n, n, dtype=torch.bool).tril() & (
        (owner_t[:, None] == owner_t[None, :]) | (owner_t[None, :] == -1))
    return {"input_ids": torch.tensor([ids]), "labels": torch.tensor([labels]),
            "position_ids": torch.tensor([positions]), "attention_mask": visible[None, None]}


def micro_batch_size(settings) -> int:
    """Examples per forward/backward pass: ``settings.micro_batch_size`` (None: the whole batch).
    The optimizer still steps once per ``batch_size`` examples (gradient accumulation), so a
    smaller micro-batch lowers the activation memory without changing what a step sees."""
    micro = settings.batch_size if settings.micro_batch_size is None else settings.micro_batch_size
    if micro < 1 or settings.batch_size % micro:
        raise CourseError(f"micro_batch_size={settings.micro_batch_size} must divide batch_size={settings.batch_size} "
                          "(e.g. batch_size=4 with micro_batch_size=2 or 1).")
    return micro


def qlora_model(profile, model=None):
    """The model a training run updates: the profile's base in 4-bit NF4 (or ``model``, already in
    NF4: ``benchmarks/gpu_check.py`` passes a random one), prepared for k-bit training, with fresh
    LoRA adapters on :func:`lora_target_modules` of the adapted blocks."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    from . import profiles
    from .harmless_messages import peft_old_name_warnings_dropped

    s = profile.training
    model = profiles.load_model(profile, quantized=True) if model is None else model
    keep_nf4_trainable(model)
    with peft_old_name_warnings_dropped():  # peft uses transformers' old checkpointing names
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=s.gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
        lora = LoraConfig(r=s.lora_rank, lora_alpha=s.lora_alpha, lora_dropout=s.lora_dropout,
                          task_type="CAUSAL_LM", target_modules=lora_target_modules(model),
                          layers_to_transform=adapted_blocks(model, s.adapted_blocks))
        return get_peft_model(model, lora)


def keep_nf4_trainable(model) -> int:
    """Stop bitsandbytes from repacking the NF4 weights for CPU inference; returns the layers touched.

    On a CPU with AVX512-BF16 (``bitsandbytes.functional.has_avx512bf16()``), the first forward
    pass of a ``Linear4bit`` in eval mode without gradients (the Trainer's validation loss before
    step 1 is one) rewrites its weight into a layout for a fast inference kernel, for good. That
    kernel has no backward: every later training step back-propagates through it, PyTorch warns
    "an autograd kernel was not registered", and the LoRA gradients come out wrong. Measured on an
    AMD EPYC with AVX512-BF16: after one eval pass the gradients differed from the true ones by
    160% (relative norm), and the behaviour run's loss rose from 1.8 to 3.9 instead of falling.
    Training models keep the standard layout; on CPUs without AVX512-BF16 nothing changes. A model
    whose weights were already repacked raises :class:`CourseError`.

    The switch is found by name, so a bitsandbytes release that renames it would make this do
    nothing, and the wrong gradients would come back without a sign. A model that holds 4-bit
    weights (``Params4bit``, recognised by their ``quant_state``) none of which has the switch
    therefore raises :class:`CourseError` too; a model without 4-bit layers is left alone (0).
    """
    touched = 0
    nf4_layers = 0
    for module in model.modules():
        if hasattr(getattr(module, "weight", None), "quant_state"):
            nf4_layers += 1
        if not hasattr(module, "support_avx512bf16_for_cpu"):
            continue
        if getattr(getattr(module.weight, "quant_state", None), "packing_format_for_cpu", False):
            # bitsandbytes can convert back only approximately (the scales went to bfloat16)
            raise CourseError("This 4-bit model already ran an inference pass on this CPU, which repacked its "
                              "weights into a layout that cannot be trained. Load a fresh one for training "
                              "(finetune.qlora_model does).")
        module.support_avx512bf16_for_cpu = False
        touched += 1
    if nf4_layers and not touched:
        raise CourseError(f"The model has {nf4_layers} 4-bit layers, but none has bitsandbytes' "
                          "`support_avx512bf16_for_cpu` switch, so keep_nf4_trainable cannot stop the repacking "
                          "that breaks training on some CPUs. The installed bitsandbytes is not the pinned one: "
                          "reinstall it with `pip install bitsandbytes==0.50.2` (or `make env`).")
    return touched


def train_adapter(profile, train: Sequence[Any], val: Sequence[Any] | None, *, output_dir: str | os.PathLike,
                  progress: bool = True) -> TrainResult:
    """Train a QLoRA adapter with the profile's :class:`~ftrag.profiles.TrainingSettings`.

    The base is loaded in 4-bit NF4 (``profiles.load_model(profile, quantized=True)``), prepared
    for k-bit training and wrapped with LoRA on :func:`lora_target_modules`. Training uses the
    transformers ``Trainer`` (CPU: ``use_cpu``; GPU: bf16/fp16 autocast as the profile's compute
    dtype), evaluates on ``val`` every ``eval_every`` steps (and once before the first step), and
    saves the adapter plus ``training.json`` with the measured figures into ``output_dir``.
    """
    import torch
    from transformers import DataCollatorForSeq2Seq, TrainingArguments, set_seed
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from . import profiles

    s = profile.training
    train = list(train)[: s.train_examples] if s.train_examples else list(train)
    val = evenly_spaced(val or [], VAL_LOSS_EXAMPLES)
    if not train:
        raise CourseError("train_adapter got no training examples.")
    check_bitsandbytes(profile)
    tok = profiles.load_tokenizer(profile)
    train_enc = encode_examples(tok, train, s.max_seq_len)
    val_enc = encode_examples(tok, val, s.max_seq_len)

    output_dir = Path(output_dir)
    set_seed(SEED)
    gc.collect()
    if profile.is_gpu:
        torch.cuda.reset_peak_memory_stats()
    else:
        release_freed_memory()  # models the caller deleted: give their memory back before training
    model = qlora_model(profile)
    trainable, total = model.get_nb_trainable_parameters()  # counts packed 4-bit weights correctly

    dtype = profiles.compute_dtype(profile)
    micro = micro_batch_size(s)
    args = TrainingArguments(
        output_dir=str(output_dir.with_name(output_dir.name + ".trainer")),
        use_cpu=not profile.is_gpu,
        bf16=dtype == torch.bfloat16,  # float32 on the cpu profile; bf16 autocast also runs on a CPU
        fp16=profile.is_gpu and dtype == torch.float16,
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=s.batch_size // micro,
        per_device_eval_batch_size=micro,
        max_steps=s.max_steps,
        learning_rate=s.learning_rate,
        lr_scheduler_type="constant",
        logging_steps=1,
        eval_strategy="steps" if val_enc else "no",
        eval_steps=s.eval_every,
        save_strategy="no",
        report_to="none",
        seed=SEED,
        data_seed=SEED,
        disable_tqdm=True,
        dataloader_num_workers=0,
        prediction_loss_only=True,  # never gather eval logits (batch x length x vocabulary floats)
        train_sampling_strategy="group_by_length",  # batches of similar length pad less
    )
    progress_bar = _progress_callback(s.max_steps, progress)
    trainer = _trainer_class()(model=model, args=args, train_dataset=train_enc, eval_dataset=val_enc or None,
                               data_collator=pack_shared_prefix if s.share_prompt_prefix else
                               DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=IGNORE_INDEX),
                               callbacks=[progress_bar])
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)

    val_losses: list[tuple[int, float]] = []
    if val_enc:
        val_losses.append((0, float(trainer.evaluate()["eval_loss"])))
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    history = trainer.state.log_history
    train_losses = [(int(h["step"]), float(h["loss"])) for h in history if "loss" in h]
    val_losses += [(int(h["step"]), float(h["eval_loss"])) for h in history if "eval_loss" in h]
    if val_enc and val_losses[-1][0] != trainer.state.global_step:
        val_losses.append((trainer.state.global_step, float(trainer.evaluate()["eval_loss"])))
    steps = int(trainer.state.global_step)

    tmp = output_dir.with_name(output_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    result = TrainResult(
        adapter_dir=str(output_dir), train_losses=train_losses, val_losses=val_losses,
        seconds=round(seconds, 2), steps=steps,
        seconds_per_step=round(sum(progress_bar.step_seconds) / max(len(progress_bar.step_seconds), 1), 3),
        peak_memory_mb=round(peak_memory_mb(profile.device), 1), trainable_params=int(trainable),
        total_params=int(total), settings=_settings_dict(profile), examples=len(train_enc),
        device=profile.device,
    )
    (tmp / METRICS_FILE).write_text(json.dumps(result.to_json(), indent=2), encoding="utf-8")
    shutil.rmtree(output_dir, ignore_errors=True)
    tmp.rename(output_dir)  # appears complete or not at all
    shutil.rmtree(args.output_dir, ignore_errors=True)
    del trainer, model
    gc.collect()
    if profile.is_gpu:
        torch.cuda.empty_cache()
    else:
        release_freed_memory()
    return result


# --------------------------------------------------------------------------- cached adapters


def adapter_key(profile, train: Sequence[Any], val: Sequence[Any] | None) -> str:
    """Hash of everything that determines the adapter: data, settings, base model, code version."""
    blob = json.dumps({
        "format": FORMAT_VERSION,
        "train": [_messages_of(ex) for ex in train],
        "val": [_messages_of(ex) for ex in (val or [])],
        "settings": _settings_dict(profile),
    }, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def adapter_dir_for(profile, name: str, train: Sequence[Any], val: Sequence[Any] | None) -> Path:
    return cache_dir() / "adapters" / f"{name}-{adapter_key(profile, train, val)}"


def is_complete(adapter_dir: str | os.PathLike) -> bool:
    folder = Path(adapter_dir)
    return all((folder / f).is_file() for f in (ADAPTER_FILE, ADAPTER_CONFIG, METRICS_FILE))


def load_result(adapter_dir: str | os.PathLike) -> TrainResult:
    data = json.loads((Path(adapter_dir) / METRICS_FILE).read_text(encoding="utf-8"))
    return TrainResult.from_json(data, adapter_dir=str(adapter_dir), cached=True)


def ensure_adapter(profile, name: str, train: Sequence[Any], val: Sequence[Any] | None = None, *,
                   progress: bool = True) -> TrainResult:
    """The adapter ``name`` for this data and these settings: trained once, then read from the cache.

    ``ensure_adapter(profile, "behaviour", load_finetune("train"), load_finetune("val"))`` is the
    course's behaviour adapter (JSON format + Lumio voice), shared by the QLoRA and hybrid labs.
    A returned result with ``cached=True`` carries the figures measured when it was trained.
    """
    train, val = list(train), list(val or [])
    folder = adapter_dir_for(profile, name, train, val)
    if is_complete(folder):
        try:
            return load_result(folder)
        except (ValueError, TypeError, KeyError):
            pass  # unreadable metrics: train again
    folder.parent.mkdir(parents=True, exist_ok=True)
    return train_adapter(profile, train, val, output_dir=folder, progress=progress)


def behaviour_adapter(profile, *, progress: bool = True) -> TrainResult:
    """The canonical behaviour adapter: trained on ``data/finetune`` train, validated on its val split."""
    from .data import load_finetune

    return ensure_adapter(profile, "behaviour", load_finetune("train"), load_finetune("val"), progress=progress)


# --------------------------------------------------------------------------- loading tuned models


def adapter_hash(adapter_dir: str | os.PathLike) -> str:
    path = Path(adapter_dir) / ADAPTER_FILE
    if not path.exists():
        raise CourseError(f"No adapter in {adapter_dir} ({ADAPTER_FILE} is missing); train it with "
                          "ftrag.finetune.ensure_adapter.")
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def adapter_cache_tag(profile, adapter_dir: str | os.PathLike) -> str:
    """Generation-cache tag for the base model + this adapter: changes whenever the weights do, and
    with :data:`ftrag.generation.GENERATION_VERSION`, like the base model's tag."""
    from .generation import GENERATION_VERSION

    return f"{profile.name}-adapter-{adapter_hash(adapter_dir)[:12]}-{GENERATION_VERSION}"


def load_tuned(profile, adapter_dir: str | os.PathLike, *, merge: bool = True):
    """The profile's base in full precision with the adapter on top, in eval mode.

    ``merge=True`` folds ``W + (alpha/r) B A`` into the weights (``merge_and_unload``) and returns a
    plain transformers model, as fast as the base. ``merge=False`` returns the ``PeftModel``.
    """
    from peft import PeftModel

    from . import profiles
    from .harmless_messages import peft_old_name_warnings_dropped

    adapter_hash(adapter_dir)  # a clear error for a missing adapter
    base = profiles.load_model(profile, quantized=False)
    with peft_old_name_warnings_dropped():  # peft uses transformers' old checkpointing names
        model = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
    if merge:
        model = model.merge_and_unload().eval()
    return model


# --------------------------------------------------------------------------- reports


def _text(generation: Any) -> str:
    return generation if isinstance(generation, str) else generation.text


def behaviour_format_prompts(course, profile) -> list[Any]:
    """The format prompts the behaviour evaluation asks (:func:`behaviour_prompt_sets`)."""
    return evenly_spaced(course.format_prompts, profile.eval_behaviour_limit)


def behaviour_prompt_sets(course, profile) -> dict[str, tuple[list[list[dict[str, str]]], list[bool | None]]]:
    """The prompts the QLoRA lab's behaviour evaluation asks, as ``{set name: (conversations,
    expected needs_human flags)}``: validation chats without their replies (a hand-off is expected
    where the chat's kind is ``handoff``) and the format prompts with their passages. At most
    ``profile.eval_behaviour_limit`` of each, evenly spaced through the file (None = all)."""
    from .prompts import chat

    val = evenly_spaced(course.finetune_val, profile.eval_behaviour_limit)
    fmt = behaviour_format_prompts(course, profile)
    return {"validation": ([prompt_of(e) for e in val], [e.kind == "handoff" for e in val]),
            "format": ([chat(f.question, f.passages) for f in fmt], [f.expect_needs_human for f in fmt])}


def behaviour_report(generations: Sequence[Any], expect_needs_human: Sequence[bool | None] | None = None
                     ) -> dict[str, Any]:
    """How well replies follow the trained behaviour.

    ``json_valid``: share of schema-exact JSON replies; ``voice``: mean voice score of the answer
    text (the raw reply where it is not JSON); ``voice_rules``: share of replies passing each rule;
    ``needs_human_accuracy``: share of replies whose ``needs_human`` equals the expected value
    (a missing or invalid flag counts as wrong), over the prompts where one is expected.
    ``handoff_reply_when_needed`` / ``..._when_not_needed``: share of replies whose *text* declines
    or passes the customer on (:func:`ftrag.evaluate.says_handoff`) among the prompts that call for
    a hand-off / that do not (the second is over-refusal: a bot that passes every question on is
    useless too); ``handoff_replies_flagged``: of the replies whose text hands off, the share that
    also set ``needs_human`` (without the flag nobody is told to take over).
    """
    from .evaluate import mean, parse_reply, says_handoff, voice_checks

    parsed = [parse_reply(_text(g)) for g in generations]
    checks = [voice_checks(p.answer) for p in parsed]
    rules = list(checks[0]) if checks else []
    report: dict[str, Any] = {
        "n": len(parsed),
        "json_valid": mean([float(p.valid) for p in parsed]),
        "voice": mean([sum(c.values()) / len(c) for c in checks]),
        "voice_rules": {r: mean([float(c[r]) for c in checks]) for r in rules},
    }
    if expect_needs_human is not None:
        pairs = [(p, e) for p, e in zip(parsed, expect_needs_human, strict=True) if e is not None]
        report["needs_human_accuracy"] = mean([float(p.needs_human is e) for p, e in pairs])
        for key, expected in (("handoff_reply_when_needed", True), ("handoff_reply_when_not_needed", False)):
            said = [float(says_handoff(p.answer)) for p, e in pairs if e is expected]
            if said:
                report[key] = mean(said)
    handoffs = [p for p in parsed if says_handoff(p.answer)]
    if handoffs:
        report["handoff_replies_flagged"] = mean([float(p.needs_human is True) for p in handoffs])
    return report


def knowledge_report(generations: Sequence[Any], answers: Sequence[Sequence[str]]) -> dict[str, Any]:
    """Fact accuracy of replies against gold answer variants (:func:`ftrag.evaluate.is_correct` on
    the answer text), and the share of *confident wrong* replies: wrong, and not a hand-off
    (:func:`ftrag.evaluate.is_handoff`: neither flagged nor worded as one)."""
    from .evaluate import is_correct, is_handoff, mean, parse_reply

    parsed = [parse_reply(_text(g)) for g in generations]
    correct = [is_correct(p.answer, a) for p, a in zip(parsed, answers, strict=True)]
    confident_wrong = [not c and not is_handoff(p) for p, c in zip(parsed, correct)]
    return {"n": len(parsed), "accuracy": mean([float(c) for c in correct]),
            "confident_wrong": mean([float(c) for c in confident_wrong]),
            "correct": correct, "confident_wrong_flags": confident_wrong}


def behaviour_table(reports: Mapping[str, Mapping[str, Any]]):
    """Behaviour reports side by side (pandas DataFrame, one column per report, one row per metric)."""
    import pandas as pd

    rows: dict[str, dict[str, Any]] = {}
    for name, rep in reports.items():
        col = {"prompts": rep["n"], "JSON valid": rep["json_valid"], "voice score": rep["voice"]}
        col.update({f"voice: {rule.replace('_', ' ')}": share for rule, share in rep["voice_rules"].items()})
        if "needs_human_accuracy" in rep:
            col["needs_human correct"] = rep["needs_human_accuracy"]
        for key, label in (("handoff_reply_when_needed", "hand-off reply, when needed"),
                           ("handoff_reply_when_not_needed", "hand-off reply, when not needed"),
                           ("handoff_replies_flagged", "hand-off replies that set needs_human")):
            if key in rep:
                col[label] = rep[key]
        rows[name] = col
    return pd.DataFrame(rows)


def distinct_first(replies: Sequence[Any], n: int) -> list[int]:
    """Indices of up to ``n`` replies, the first of each distinct text before any repeat (then the
    rest in order): a sample that shows as many different replies as there are."""
    seen: set[str] = set()
    firsts, repeats = [], []
    for i, reply in enumerate(replies):
        (repeats if _text(reply) in seen else firsts).append(i)
        seen.add(_text(reply))
    return sorted((firsts + repeats)[:n])


def side_by_side(questions: Sequence[str], columns: Mapping[str, Sequence[Any]], *, n: int = 4,
                 width: int = 160):
    """A few replies of several models to the same questions (pandas DataFrame, texts shortened)."""
    import pandas as pd

    picks = evenly_spaced(range(len(questions)), n)

    def short(text: str) -> str:
        text = " ".join(text.split())
        return text if len(text) <= width else text[: width - 1] + "\u2026"

    return pd.DataFrame([{"question": short(questions[i]),
                          **{name: short(_text(replies[i])) for name, replies in columns.items()}}
                         for i in picks])


# --------------------------------------------------------------------------- injecting facts

#: On the cpu profile the "inject facts" experiment uses this many of the 40 facts (4 training
#: phrasings and 1 paraphrase each), to fit the lab's time budget; gpu: all.
CPU_INJECT_FACTS = 10
#: Passes over the phrasings, at this multiple of the profile's learning rate. Measured on the cpu
#: profile (10 facts, 20 vs 30 steps): 2 epochs at 2x gave training phrasings 0.53 / paraphrases 0.40,
#: 3 epochs at 1x gave 0.48 / 0.40 in a third more time; 2 epochs at 3x gave 0.70 / 0.60.
INJECT_EPOCHS = 2
INJECT_LR_FACTOR = 2.0


def inject_setup(profile, train: Sequence[Any], test: Sequence[Any], *, n_facts: int | None = None,
                 epochs: float = INJECT_EPOCHS, lr_factor: float = INJECT_LR_FACTOR):
    """The facts-injection experiment: ``(profile with its training settings, train subset, test subset)``.

    The facts are spread evenly over the file (``n_facts``; default: all on gpu, 10 on cpu). The
    adapter trains for ``epochs`` passes over their phrasings at ``lr_factor`` times the profile's
    learning rate, enough to fit the phrasings it saw; no validation loss (the paraphrases are the test).
    """
    import math

    if n_facts is None:
        n_facts = None if profile.is_gpu else CPU_INJECT_FACTS
    facts = set(evenly_spaced(sorted({ex.fact_id for ex in train}), n_facts))
    train_sub = [ex for ex in train if ex.fact_id in facts]
    test_sub = [q for q in test if q.fact_id in facts]
    steps = max(1, math.ceil(epochs * len(train_sub) / profile.training.batch_size))
    tuned = profile.with_training(max_steps=steps, eval_every=steps, train_examples=None,
                                  learning_rate=profile.training.learning_rate * lr_factor)
    return tuned, train_sub, test_sub


def training_phrasing_answers(train: Sequence[Any], test: Sequence[Any]) -> list[tuple[str, ...]]:
    """Gold answers for each training example of the inject set (those of its fact's test question)."""
    by_fact = {q.fact_id: tuple(q.answers) for q in test}
    missing = sorted({ex.fact_id for ex in train} - set(by_fact))
    if missing:
        raise DataError(f"inject_facts: no test question (gold answers) for {', '.join(missing)}.")
    return [by_fact[ex.fact_id] for ex in train]


def prompt_of(example: Any) -> list[dict[str, str]]:
    """The messages of a training/validation example without its assistant reply (what the model sees)."""
    msgs = _messages_of(example)
    return msgs[:-1] if msgs and msgs[-1].get("role") == "assistant" else msgs


def check_bitsandbytes(profile=None) -> None:
    """Raise :class:`CourseError` with the fix when bitsandbytes cannot quantise on this machine."""
    try:
        import bitsandbytes.functional as F
        import torch

        device = "cuda" if profile is not None and profile.is_gpu else "cpu"
        weight = torch.randn(64, 64, device=device)
        q, state = F.quantize_4bit(weight, quant_type="nf4")
        F.dequantize_4bit(q, state)
    except CourseError:
        raise
    except Exception as exc:  # noqa: BLE001 - turned into one readable line
        raise CourseError(
            f"bitsandbytes cannot run 4-bit NF4 here ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}). "
            "Reinstall the pinned environment (`make test`, or `pip install bitsandbytes==0.50.2`; "
            "version 0.45 or newer runs NF4 on CPU), or use the gpu profile on a CUDA machine."
        ) from exc

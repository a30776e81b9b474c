"""Which layers get LoRA adapters, and how large the adapter they make is.

QLoRA (Dettmers et al., 2023) quantises the linear layers of the repeated decoder blocks to 4 bits
and puts LoRA adapters (Hu et al., 2021) on them. The targets are read from the model itself
(:func:`block_linears`), so the same code serves SmolLM2, Qwen and the tests' tiny random models;
the adapter's size follows from their shapes without training anything (:func:`lora_adapter_mb`).
"""
from __future__ import annotations

from typing import Any

from . import memory
from .errors import CourseError


def _block_index(path: str) -> int | None:
    """Index of the numbered decoder block a module path goes through (``model.layers.7.mlp`` -> 7)."""
    return next((int(p) for p in path.split(".") if p.isdigit()), None)


def block_linears(model, last_blocks: int | None = None) -> list[tuple[str, Any]]:
    """``(path, module)`` of every linear layer inside the repeated decoder blocks: the layers
    QLoRA quantises to 4 bits and puts adapters on.

    Read from the model itself: every leaf ``nn.Linear`` (bitsandbytes' ``Linear4bit`` is one) whose
    path goes through a numbered block (``model.layers.7.mlp.up_proj``). The output head, the
    embeddings and any LoRA layers already present are left out; a layer peft has wrapped counts under
    the wrapper's path. ``last_blocks=N`` keeps only the
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
        if parts[-1] == "base_layer":  # wrapped by peft: the layer keeps the name of its wrapper
            path = path.rsplit(".", 1)[0]
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


def lora_shapes(model, last_blocks: int | None = None) -> list[tuple[int, int]]:
    """``(d_in, d_out)`` of every linear layer the course's QLoRA puts an adapter on.

    The targets are :func:`block_linears` (the linear layers inside the decoder
    blocks; with ``last_blocks=N`` those of the last N blocks, as the profile's
    ``training.adapted_blocks``); this needs the model object but no training and no GPU.
    """
    return [(int(module.in_features), int(module.out_features))
            for _, module in block_linears(model, last_blocks)]


def lora_adapter_params(model_or_shapes, rank: int, *, last_blocks: int | None = None) -> int:
    """Trainable parameters of a LoRA adapter of ``rank`` on a model (or on ``(d_in, d_out)`` shapes);
    ``last_blocks`` as in :func:`lora_shapes`."""
    shapes = (list(model_or_shapes) if not hasattr(model_or_shapes, "named_modules")
              else lora_shapes(model_or_shapes, last_blocks))
    if not shapes:
        raise CourseError("No layers to put LoRA on: pass a model or a list of (d_in, d_out) shapes.")
    return sum(memory.lora_params(d_in, d_out, rank) for d_in, d_out in shapes)


def lora_adapter_mb(model_or_shapes, rank: int, *, bytes_per_param: int = 4,
                    last_blocks: int | None = None) -> float:
    """Expected size in MB (10**6 bytes, like :func:`ftrag.costs.adapter_size_mb`) of the
    adapter file: LoRA parameters x ``bytes_per_param`` (4: PEFT keeps and saves LoRA weights in
    float32). The few kilobytes of file header are left out."""
    return lora_adapter_params(model_or_shapes, rank, last_blocks=last_blocks) * bytes_per_param / 1e6

"""What QLoRA costs, measured: weight memory (full precision vs 4-bit), peak memory in training,
the adapter file, and generation speed.

Sizes are in MB and GB (powers of ten), like file sizes; :mod:`ftrag.memory` has the formulas these
measurements are compared with.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .adapters import ADAPTER_FILE
from .errors import CourseError
from .lora_targets import block_linears

MB = 10**6  # sizes are reported in MB and GB (powers of ten), like file sizes


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

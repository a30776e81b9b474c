"""Test support for the gpu profile's code path on a CPU: a tiny Qwen2 architecture and the gpu
profile's settings pointed at a local checkpoint. Nothing in the course uses these; they lived in
ftrag.gpu and ftrag.profiles until only the tests called them."""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from ftrag import gpu, profiles


def tiny_architecture(vocab_size: int, **changes: Any) -> dict[str, Any]:
    """A Qwen2 architecture small enough for a CPU test (2 blocks, hidden 64), same layout as the real ones."""
    arch = dict(gpu.known_models()["Qwen/Qwen2.5-1.5B-Instruct"])
    arch.update(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                intermediate_size=128, vocab_size=vocab_size, max_position_embeddings=2048)
    arch.update(changes)
    return arch


def gpu_profile_for_test(model_dir: str | os.PathLike, *, compute_dtype: str = "bfloat16") -> profiles.Profile:
    """The gpu profile's settings (4-bit NF4, its QLoRA settings, a 16-bit compute dtype) on a local
    checkpoint folder, with every tensor on the CPU: the gpu code path end to end without a GPU."""
    profile = profiles.gpu_profile_settings(str(model_dir))
    return replace(profile, model_label=f"test-{Path(model_dir).name}", device="cpu",
                   test_compute_dtype=compute_dtype)

"""Saved LoRA adapters: their files, the hash that keys their replies in the generation cache, and
loading one for inference.

For inference the adapter is loaded onto the *full-precision* base and merged into it
(:func:`load_tuned`). Merging into the 4-bit base would round ``W + BA`` back to NF4, and the
small LoRA update is mostly lost in that rounding (:func:`ftrag.merge_checks.nf4_merge_loss`).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .errors import CourseError

ADAPTER_FILE = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


def adapter_hash(adapter_dir: str | os.PathLike) -> str:
    path = Path(adapter_dir) / ADAPTER_FILE
    if not path.exists():
        raise CourseError(f"No adapter in {adapter_dir} ({ADAPTER_FILE} is missing); train it with "
                          "ftrag.training.ensure_adapter.")
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


def load_tuned(profile, adapter_dir: str | os.PathLike, *, merge: bool = True, on_nf4: bool = False):
    """The profile's base in full precision with the adapter on top, in eval mode.

    ``on_nf4=True`` puts the adapter on the 4-bit NF4 base it was trained on instead (never merged:
    merging into 4-bit weights would re-quantise the update), to compare serving on the
    full-precision base with the base the adapter learned against.

    ``merge=True`` folds ``W + (alpha/r) B A`` into the weights (``merge_and_unload``) and returns a
    plain transformers model, as fast as the base. ``merge=False`` returns the ``PeftModel``.
    """
    from peft import PeftModel

    from . import profiles
    from .harmless_messages import peft_old_name_warnings_dropped

    adapter_hash(adapter_dir)  # a clear error for a missing adapter
    base = profiles.load_model(profile, quantized=on_nf4)
    with peft_old_name_warnings_dropped():  # peft uses transformers' old checkpointing names
        model = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
    if merge and not on_nf4:
        model = model.merge_and_unload().eval()
    return model

"""Does merging the adapter keep what it learned? Two checks the QLoRA lab runs.

* :func:`nf4_merge_loss`: how much of the LoRA update survives a merge into a 4-bit base (little)
  compared with a merge into the full-precision weights (all of it).
* Teacher forcing (:func:`teacher_forcing_row`, :func:`reply_logits`, :func:`next_token_agreement`):
  feed replies back in after their prompts, in one forward pass, and compare which token two
  models rank first at every position. If the adapter and the merged model agree everywhere,
  greedy decoding would write the same replies with either, token for token.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .behaviour_reports import reply_text
from .cpu_speedups import pack_shared_prefix, reply_position_logits
from .encoding import encode_examples
from .errors import CourseError


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
                    raise CourseError("nf4_merge_loss needs the adapter on a full-precision base "
                                      "(adapters.load_tuned(merge=False)).")
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


def teacher_forcing_row(tokenizer, conversations: Sequence[Sequence[dict[str, str]]], replies: Sequence[Any],
                        max_len: int) -> dict[str, Any]:
    """The ``conversations`` with ``replies`` (texts or generations) as their assistant turns,
    encoded like training chats (:func:`encode_example`) and packed into one row
    (:func:`pack_shared_prefix`): what :func:`reply_logits` reads to score a reply without decoding it."""
    if len(conversations) != len(replies) or not replies:
        raise CourseError(f"teacher_forcing_row needs one reply per conversation (got {len(replies)} replies "
                          f"for {len(conversations)} conversations).")
    chats = [list(c) + [{"role": "assistant", "content": reply_text(r)}] for c, r in zip(conversations, replies)]
    return pack_shared_prefix(encode_examples(tokenizer, chats, max_len))


def reply_logits(model, row) -> Any:
    """The model's float32 logits at every position that predicts a reply token of ``row`` (one row
    per reply token, the end-of-turn included; no gradients). Greedy decoding writes the top token
    of these at each step."""
    import torch

    with torch.no_grad():
        return reply_position_logits(model, row).float()


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

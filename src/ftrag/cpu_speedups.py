"""The course's speed-ups for training on a CPU, each with a test that it changes nothing but time.

* :func:`pack_shared_prefix`: a micro-batch of chats as one row that reads their shared system
  prompt once (a 4D attention mask keeps the chats apart); the data collator of the course's runs.
* :func:`reply_only_loss` and :data:`ReplyLossTrainer`: the loss over the reply tokens only,
  projecting only those positions onto the vocabulary (same value, a fraction of the head's cost).
* :func:`keep_nf4_trainable`: stops bitsandbytes from repacking 4-bit weights into an inference
  layout that has no backward (a correctness fix on CPUs with AVX512-BF16).
* :func:`micro_batch_size`: gradient accumulation over smaller forward passes, to lower the peak.

None of this is needed on a GPU with a plain ``Trainer``; they make the cpu profile's run fit the
lab's time and memory.
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import Any

from .encoding import IGNORE_INDEX
from .errors import CourseError


def _supervised_positions(labels):
    """``(keep, targets)``: a bool mask of the positions whose next token is supervised, and those
    next tokens in order (position ``i`` predicts token ``i + 1``)."""
    targets = labels[:, 1:]
    keep = labels.new_zeros(labels.shape, dtype=bool)
    keep[:, :-1] = targets != IGNORE_INDEX
    return keep, targets[targets != IGNORE_INDEX]


def reply_position_logits(model, inputs) -> Any:
    """Logits (one row per supervised position, flattened) of the positions that predict a reply
    token: the hidden states are cut to those positions before the output head."""
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
    return F.cross_entropy(reply_position_logits(model, inputs).float(), targets)


@cache
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
                              "(training.qlora_model does; so does the lab's set-up cell).")
        module.support_avx512bf16_for_cpu = False
        touched += 1
    if nf4_layers and not touched:
        raise CourseError(f"The model has {nf4_layers} 4-bit layers, but none has bitsandbytes' "
                          "`support_avx512bf16_for_cpu` switch, so keep_nf4_trainable cannot stop the repacking "
                          "that breaks training on some CPUs. The installed bitsandbytes is not the pinned one: "
                          "reinstall it with `pip install bitsandbytes==0.50.2` (or `make env`).")
    return touched


def __getattr__(name: str):
    # ReplyLossTrainer subclasses transformers' Trainer, which is slow to import: built on first use.
    if name == "ReplyLossTrainer":
        return _trainer_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

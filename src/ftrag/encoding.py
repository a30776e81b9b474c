"""Chat examples as training rows: the chat template, with the loss on the assistant's reply only.

The system prompt, the context and the question are labelled ``-100`` (ignored by the loss), so the
model learns *how to answer*, not how to write questions; the reply and its end-of-turn token keep
their ids.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .errors import CourseError, DataError

#: The label PyTorch's cross-entropy (and transformers) ignore: the prompt's tokens get it.
IGNORE_INDEX = -100


def messages_of(example: Any) -> list[dict[str, str]]:
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
    msgs = messages_of(messages)
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


def prompt_of(example: Any) -> list[dict[str, str]]:
    """The messages of a training/validation example without its assistant reply (what the model sees)."""
    msgs = messages_of(example)
    return msgs[:-1] if msgs and msgs[-1].get("role") == "assistant" else msgs

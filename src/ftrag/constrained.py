"""Constrained decoding: the answer schema enforced token by token while the model generates.

The model still picks every token, but at each step the tokens that would break the schema are
masked out of its choices, so a reply that *finishes* is schema-valid by construction. The course
uses xgrammar, which compiles a JSON schema into a grammar over the tokenizer's vocabulary and
works offline with the pinned transformers. With ``model.generate`` the library's own logits
processor does it (:meth:`JsonConstraint.processor`, ``xgrammar.contrib.hf.LogitsProcessor``). The
course's decoder (:func:`ftrag.generation.greedy_decode`) drops each reply from the batch when it ends,
which a ``generate`` logits processor cannot follow, so it drives one ``xgrammar.GrammarMatcher`` per
row itself (:meth:`JsonConstraint.row_matchers`, a course-specific speed-up): the same masks, the
same tokens (``tests/test_prompt_first.py`` compares the two).

Two things a plain ``{"type": "string"}`` schema gets wrong with a 135M model (found by trying):

* an unbounded ``answer`` string runs until ``max_new_tokens`` and the reply is cut mid-string,
  so it is invalid anyway: :func:`answer_schema` caps the answer's length in characters;
* ``sources`` filled with invented ids: the schema allows only the ids of the passages actually in
  the prompt (an empty list when there are none), read from the prompt's ``[id] text`` lines.

:class:`JsonConstraint` builds one grammar per prompt (compiled grammars are cached by schema) and
times its own work, so the overhead per generated token is measured, not guessed.
"""
from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from functools import lru_cache

#: Bump when the schema or the way it is enforced changes: part of the constrained reply-cache tag.
CONSTRAINT_VERSION = "c2"
#: The answer field's cap in characters. About 4 characters a token, so 240 characters is about 60
#: tokens, which leaves room in a 96-token budget for the keys, three source ids and the flag.
MAX_ANSWER_CHARS = 240
#: At most this many cited ids (the prompts carry at most a handful of passages).
MAX_SOURCES = 3

_PASSAGE_ID = re.compile(r"^\[([^\]\s]+)\] ", re.MULTILINE)


def passage_ids(messages: Sequence[dict[str, str]]) -> list[str]:
    """The ids of the context passages in the *last* user turn (``[kb-...] text`` lines), in
    order and without repeats: the only ids a reply may cite."""
    users = [m["content"] for m in messages if m["role"] == "user"]
    return list(dict.fromkeys(_PASSAGE_ID.findall(users[-1]))) if users else []


def answer_schema(source_ids: Sequence[str], *, max_answer_chars: int = MAX_ANSWER_CHARS,
                  max_sources: int = MAX_SOURCES) -> dict:
    """The answer schema of :mod:`ftrag.prompts` as a JSON schema, with the answer's length bounded
    and ``sources`` restricted to ``source_ids`` (no ids at all when the prompt has no passages)."""
    if max_answer_chars < 1:
        raise ValueError(f"max_answer_chars must be at least 1, got {max_answer_chars}")
    ids = list(dict.fromkeys(source_ids))
    sources = ({"type": "array", "items": {"enum": ids}, "maxItems": min(max_sources, len(ids))}
               if ids else {"type": "array", "maxItems": 0})
    return {"type": "object",
            "properties": {"answer": {"type": "string", "minLength": 1, "maxLength": max_answer_chars},
                           "sources": sources,
                           "needs_human": {"type": "boolean"}},
            "required": ["answer", "sources", "needs_human"],
            "additionalProperties": False}


class JsonConstraint:
    """Builds xgrammar logits processors that hold each prompt's reply to :func:`answer_schema`.

    ``seconds`` adds up the time spent compiling grammars and masking logits, ``steps`` the
    (row, token) steps masked: ``overhead_ms_per_token`` is their ratio. The generator stores each
    batch's share in :attr:`ftrag.generation.Generation.constraint_seconds`."""

    def __init__(self, tokenizer, vocab_size: int, *, max_answer_chars: int = MAX_ANSWER_CHARS,
                 max_sources: int = MAX_SOURCES):
        import xgrammar as xgr

        self.max_answer_chars = max_answer_chars
        self.max_sources = max_sources
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size,
                                                  stop_token_ids=[tokenizer.eos_token_id])
        self._compiler = xgr.GrammarCompiler(info, max_threads=1)
        self._compiled = lru_cache(maxsize=512)(self._compile)
        self.seconds = 0.0
        self.steps = 0
        self.compile_seconds = 0.0

    @property
    def tag(self) -> str:
        """What changes the replies: part of the reply-cache tag."""
        return f"{CONSTRAINT_VERSION}-{self.max_answer_chars}-{self.max_sources}"

    def _compile(self, schema_json: str):
        t0 = time.perf_counter()
        # compact separators and no free whitespace: the layout prompts.answer_json writes
        grammar = self._compiler.compile_json_schema(schema_json, any_whitespace=False, separators=(", ", ": "))
        elapsed = time.perf_counter() - t0
        self.compile_seconds += elapsed
        self.seconds += elapsed
        return grammar

    def schema_for(self, messages: Sequence[dict[str, str]]) -> dict:
        return answer_schema(passage_ids(messages), max_answer_chars=self.max_answer_chars,
                             max_sources=self.max_sources)

    def row_matchers(self, conversations: Sequence[Sequence[dict[str, str]]]) -> "RowMatchers":
        """One grammar matcher per prompt of a batch, for :func:`ftrag.generation.greedy_decode`:
        row ``i`` follows the schema of ``conversations[i]``."""
        return RowMatchers(self, self._grammars(conversations))

    def _grammars(self, conversations):
        return [self._compiled(json.dumps(self.schema_for(c))) for c in conversations]

    def processor(self, conversations: Sequence[Sequence[dict[str, str]]]):
        """The library's way, for ``model.generate(logits_processor=[...])``: one xgrammar logits
        processor for a batch, row ``i`` following the schema of ``conversations[i]``. The course
        decodes with :meth:`row_matchers` instead; the tests use this one as the reference."""
        from xgrammar.contrib.hf import LogitsProcessor

        grammars = self._grammars(conversations)
        inner = LogitsProcessor(grammars if len(grammars) > 1 else grammars[0])
        constraint = self

        class _Timed:  # a transformers logits processor is any callable (input_ids, scores) -> scores
            def __call__(self, input_ids, scores):
                t0 = time.perf_counter()
                out = inner(input_ids, scores)
                constraint.seconds += time.perf_counter() - t0
                constraint.steps += input_ids.shape[0]
                return out

        return _Timed()

    @property
    def overhead_ms_per_token(self) -> float:
        """Milliseconds spent enforcing the schema per generated token (per row and step)."""
        return 1000 * self.seconds / self.steps if self.steps else float("nan")


class RowMatchers:
    """An ``xgrammar.GrammarMatcher`` per row of a batch, driven by
    :func:`ftrag.generation.greedy_decode`, which passes the original numbers of the rows still
    decoding: :meth:`mask` sets the logits of the tokens a row's grammar forbids to minus infinity,
    :meth:`accept` advances each row's grammar by the token chosen. Time and steps are added to the
    :class:`JsonConstraint` that built it."""

    def __init__(self, constraint: JsonConstraint, grammars: Sequence):
        import xgrammar as xgr

        self._xgr = xgr
        self._constraint = constraint
        self.matchers = [xgr.GrammarMatcher(g) for g in grammars]
        self._bitmask = xgr.allocate_token_bitmask(len(grammars), grammars[0].tokenizer_info.vocab_size)

    def mask(self, logits, rows: Sequence[int]):
        """``logits`` (one row per entry of ``rows``), masked in place and returned."""
        t0 = time.perf_counter()
        for j, row in enumerate(rows):
            self.matchers[row].fill_next_token_bitmask(self._bitmask, j)
        device = logits.device
        masked = logits if device.type == "cuda" else logits.cpu()  # xgrammar masks on CUDA or CPU
        self._xgr.apply_token_bitmask_inplace(masked, self._bitmask[:len(rows)].to(masked.device))
        logits = masked.to(device)
        self._constraint.seconds += time.perf_counter() - t0
        self._constraint.steps += len(rows)
        return logits

    def accept(self, rows: Sequence[int], tokens: Sequence[int]) -> None:
        t0 = time.perf_counter()
        for row, token in zip(rows, tokens):
            if not self.matchers[row].accept_token(token):  # cannot happen after mask(): a bug if it does
                raise RuntimeError(f"row {row}: the grammar refused token {token} that its mask allowed")
        self._constraint.seconds += time.perf_counter() - t0

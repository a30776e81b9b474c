"""Greedy chat generation in batches, with the token counts and timings the labs report.

One :class:`Generator` wraps a model and its tokenizer. Every system in the course answers through
it, so prompt tokens and latency are counted the same way for all of them.

Every prompt in the course starts with the same system prompt (about 80 tokens with SmolLM2's chat
template), and on a CPU reading those tokens again for every prompt is a noticeable share of the
work. So within a batch the generator runs the model once over the tokens all prompts share,
copies that key/value cache to every row, and lets ``generate`` read only the rest (*prefix
caching*, what hosted APIs sell as prompt caching): a batch of 16 replies took 15-18% less time,
with the same replies. :func:`shared_prefix_length` says how much is shared.

A second course-specific speed-up is :func:`greedy_decode`: ``model.generate`` keeps a finished
reply in the batch until the longest one ends, so a batch of 64 decodes at the pace of its longest
reply. :func:`greedy_decode` drops each reply from the batch (and from the key/value cache) when it
ends its turn: the same tokens, about a fifth less time for a lab's batch of 64 RAG prompts.
Constrained decoding takes the same path, with one grammar matcher per reply.

A third is the reply cache: replies are stored by weights, prompt and token limit and reused, and a
clean clone starts from the replies the course ships for its labs (:mod:`ftrag.shipped_replies`).
"""
from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm.auto import tqdm

from . import shipped_replies


#: Bump when the way replies are generated changes (prompt encoding, decoding, stopping): it is part
#: of every reply-cache tag (``ftrag.systems.base_generator``, ``ftrag.adapters.adapter_cache_tag``),
#: so replies stored by older code are not reused. ``ftrag.systems`` re-exports it.
GENERATION_VERSION = "g2"
#: A batch shares its common prefix only when it is at least this long (shorter: not worth a pass).
MIN_SHARED_PREFIX = 8
#: At most this many padded prompt tokens per batch: attention and key/value-cache memory grow with
#: batch x length, and a CPU slows to a crawl beyond that (a stuffed context gets a smaller batch).
TOKEN_BUDGET = 8192


def shared_prefix_length(rows: Sequence[Sequence[int]]) -> int:
    """How many leading tokens all ``rows`` have in common, leaving every row at least one of its own
    (``generate`` must read one token per row to start)."""
    if not rows:
        return 0
    limit = min(len(r) for r in rows) - 1
    first = rows[0]
    for k in range(max(limit, 0)):
        if any(r[k] != first[k] for r in rows[1:]):
            return k
    return max(limit, 0)


def greedy_decode(model, input_ids, attention_mask, *, max_new_tokens: int, eos_token_id: int,
                  past_key_values=None, constraint=None) -> list[list[int]]:
    """Greedy decoding of a left-padded batch that drops each row once it has written
    ``eos_token_id``; returns each row's new tokens (ending with the eos token if it ended).

    ``past_key_values`` may hold the key/value cache of the first tokens of every row (the shared
    prefix): decoding then starts after them. The tokens are those of ``model.generate(...,
    do_sample=False)`` with the same inputs (``tests/test_generation.py`` checks it); the rows left
    shrink the batch as replies end, so the later steps cost less.

    ``constraint`` (:meth:`ftrag.constrained.JsonConstraint.row_matchers`) masks, at each step, the
    tokens that would break each row's grammar (``mask(logits, rows)``) and then advances each row's
    grammar by the token chosen (``accept(rows, tokens)``); ``rows`` are the original row numbers of
    the rows still decoding. The tokens are those of ``model.generate`` with xgrammar's logits
    processor (``tests/test_prompt_first.py`` checks it).
    """
    import torch

    device = input_ids.device
    done_before = past_key_values.get_seq_length() if past_key_values is not None else 0
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    step_ids, step_positions = input_ids[:, done_before:], positions[:, done_before:]
    cache_position = torch.arange(done_before, input_ids.shape[1], device=device)
    alive = list(range(input_ids.shape[0]))
    new_tokens: list[list[int]] = [[] for _ in alive]
    for step in range(max_new_tokens):
        out = model(input_ids=step_ids, attention_mask=attention_mask, position_ids=step_positions,
                    past_key_values=past_key_values, cache_position=cache_position, use_cache=True,
                    logits_to_keep=1)
        past_key_values = out.past_key_values
        logits = out.logits[:, -1, :]
        if constraint is not None:
            logits = constraint.mask(logits.float(), alive)
        chosen = logits.argmax(-1)
        tokens = chosen.tolist()
        if constraint is not None:
            constraint.accept(alive, tokens)
        for row, token in zip(alive, tokens):
            new_tokens[row].append(token)
        keep = (chosen != eos_token_id).nonzero().flatten()
        if step == max_new_tokens - 1 or len(keep) == 0:
            break
        if len(keep) < len(alive):  # replies that ended leave the batch and the cache
            past_key_values.batch_select_indices(keep)
            alive = [alive[i] for i in keep.tolist()]
            chosen, attention_mask, step_positions = chosen[keep], attention_mask[keep], step_positions[keep]
        step_ids, step_positions = chosen[:, None], step_positions[:, -1:] + 1
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones((len(alive), 1))], dim=1)
        cache_position = cache_position[-1:] + 1
    return new_tokens


@dataclass(frozen=True)
class Generation:
    """One generated reply.

    ``seconds`` is the wall time of the batch it was generated in divided by the batch size
    (amortised seconds per answer); ``batch_seconds`` is the whole batch's wall time;
    ``constraint_seconds`` the share of ``seconds`` spent enforcing a schema (constrained decoding
    only), stored with the reply so the overhead can be reported from cached replies too.
    """

    text: str
    prompt_tokens: int
    new_tokens: int
    seconds: float
    batch_seconds: float
    constraint_seconds: float = 0.0


GENERATION_FIELDS = tuple(Generation.__dataclass_fields__)


class Generator:
    """Batched greedy decoding of chat prompts (shared prefix read once, padding before each prompt's
    own tokens, stop at end of turn)."""

    def __init__(self, model, tokenizer, *, max_new_tokens: int = 72, batch_size: int = 8,
                 cache_tag: str | None = None, share_prefix: bool = True, token_budget: int = TOKEN_BUDGET,
                 constraint=None, shipped_dir: str | Path | None = None):
        """``cache_tag`` names the exact weights (e.g. ``"cpu-base"`` or ``"cpu-adapter-<hash>"``).

        With a tag, replies are stored in ``<cache>/generations/<tag>.jsonl`` keyed by the prompt and
        ``max_new_tokens``: decoding is greedy, so the same weights and prompt give the same reply,
        and a lab re-run (or the book build after the test run) reuses them instead of generating
        again. Timings stored with a reply are those measured when it was first generated.

        ``constraint`` (a :class:`ftrag.constrained.JsonConstraint`) holds every reply to the answer
        schema while it is generated; put its ``tag`` in ``cache_tag``.

        ``shipped_dir`` (:func:`ftrag.shipped_replies.folder`) holds replies shipped with the course under
        the same tags; they are read before the local cache and never written.
        """
        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.token_budget = token_budget
        self.cache_tag = cache_tag
        self.share_prefix = share_prefix  # False: every row reads its whole prompt (for comparisons)
        self.constraint = constraint
        self.shipped_dir = Path(shipped_dir) if shipped_dir is not None else None
        self._cache: dict[str, Generation] | None = None
        self._origin: dict[str, str] = {}  # key -> "shipped" or "cached"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token

    def prompt_ids(self, messages: Sequence[dict[str, str]]) -> list[int]:
        return list(self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True,
                                                       tokenize=True, return_dict=False))

    def count_prompt_tokens(self, messages: Sequence[dict[str, str]]) -> int:
        return len(self.prompt_ids(messages))

    # ------------------------------------------------------------------ reply cache
    def _cache_path(self) -> Path:
        from .paths import cache_dir

        folder = cache_dir() / "generations"
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{self.cache_tag}.jsonl"

    def _load_cache(self) -> dict[str, Generation]:
        if self._cache is None:
            self._cache = {}
            shipped = self.shipped_dir / f"{self.cache_tag}.jsonl" if self.shipped_dir is not None else None
            if shipped is not None and shipped.exists() and shipped_replies.enabled():
                for key, row in shipped_replies.read(shipped).items():
                    self._cache[key] = Generation(**{f: row[f] for f in GENERATION_FIELDS if f in row})
                    self._origin[key] = "shipped"
            path = self._cache_path()
            if path.exists():
                for line in path.read_text(encoding="utf-8").splitlines():
                    try:
                        row = json.loads(line)
                        key = row.pop("key")  # before Generation(**row), which takes no key
                        self._cache[key] = Generation(**row)
                        self._origin[key] = "cached"
                    except (ValueError, TypeError):
                        continue  # a torn line from an interrupted run: that reply is generated again
        return self._cache

    @staticmethod
    def _key(messages: Sequence[dict[str, str]], max_new: int) -> str:
        blob = json.dumps([list(messages), max_new], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

    def generate(self, conversations: Sequence[Sequence[dict[str, str]]], *, desc: str | None = None,
                 max_new_tokens: int | None = None, progress: bool = True) -> list[Generation]:
        """Answer each conversation (a list of chat messages ending with the user turn)."""
        max_new = max_new_tokens or self.max_new_tokens
        if not self.cache_tag:
            shipped_replies.SOURCES["generated"] += len(conversations)
            return self._generate(conversations, max_new, desc, progress)
        cache = self._load_cache()
        keys = [self._key(c, max_new) for c in conversations]
        missing = sorted({k: i for i, k in enumerate(keys) if k not in cache}.values())
        shipped_replies.SOURCES.update(self._origin.get(k, "generated") for k in keys)
        if missing:
            fresh = self._generate([conversations[i] for i in missing], max_new, desc, progress)
            with self._cache_path().open("a", encoding="utf-8") as fh:
                for i, gen in zip(missing, fresh):
                    cache[keys[i]] = gen
                    self._origin[keys[i]] = "cached"  # asked again later: from the local cache
                    fh.write(json.dumps({"key": keys[i], **asdict(gen)}, ensure_ascii=False) + "\n")
        return [cache[k] for k in keys]

    def _generate(self, conversations, max_new: int, desc: str | None, progress: bool) -> list[Generation]:
        import torch

        encoded = [self.prompt_ids(c) for c in conversations]
        # Sort by length so each batch pads little; restore the caller's order at the end.
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        results: dict[int, Generation] = {}
        device = next(self.model.parameters()).device
        pad_id = self.tokenizer.pad_token_id
        bar = tqdm(total=len(encoded), desc=desc or "generating", disable=not progress or not encoded,
                   leave=False)
        for batch in self._batches(order, encoded):
            rows = [encoded[i] for i in batch]
            shared = shared_prefix_length(rows) if self.share_prefix and len(rows) > 1 else 0
            shared = shared if shared >= MIN_SHARED_PREFIX else 0
            # Layout of a row: [shared prefix][left padding][the row's own tokens]. The attention mask
            # hides the padding; positions are derived from the mask, so they run on unbroken.
            width = max(len(r) for r in rows)
            input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
            attention = torch.zeros((len(rows), width), dtype=torch.long)
            input_ids[:, :shared] = torch.tensor(rows[0][:shared], dtype=torch.long)  # the same in every row
            attention[:, :shared] = 1
            for row, ids in enumerate(rows):
                own = ids[shared:]
                input_ids[row, width - len(own):] = torch.tensor(own, dtype=torch.long)
                attention[row, width - len(own):] = 1
            input_ids, attention = input_ids.to(device), attention.to(device)
            t0 = time.perf_counter()
            constraint_before = self.constraint.seconds if self.constraint is not None else 0.0
            with torch.no_grad():
                prefix_cache = None
                if shared:  # read the shared prefix once, then give every row a copy of its cache
                    prefix_cache = self.model(input_ids=input_ids[:1, :shared], use_cache=True).past_key_values
                    prefix_cache.batch_repeat_interleave(len(rows))
                matchers = (self.constraint.row_matchers([conversations[i] for i in batch])
                            if self.constraint is not None else None)
                replies = greedy_decode(self.model, input_ids, attention, max_new_tokens=max_new,
                                        eos_token_id=self.tokenizer.eos_token_id,
                                        past_key_values=prefix_cache, constraint=matchers)
            elapsed = time.perf_counter() - t0
            constrained = (self.constraint.seconds - constraint_before) if self.constraint is not None else 0.0
            for row, i in enumerate(batch):
                new = replies[row]
                n_new = next((k for k, t in enumerate(new) if t == self.tokenizer.eos_token_id), len(new))
                text = self.tokenizer.decode(new[:n_new], skip_special_tokens=True).strip()
                results[i] = Generation(text, len(encoded[i]), n_new, elapsed / len(batch), elapsed,
                                        constrained / len(batch))
            bar.update(len(batch))
        bar.close()
        return [results[i] for i in range(len(encoded))]

    def _batches(self, order: list[int], encoded: list[list[int]]):
        """Consecutive groups of at most ``batch_size`` prompts and at most ``token_budget`` padded
        prompt tokens: long prompts (a stuffed context) go in smaller batches."""
        batch: list[int] = []
        for i in order:  # sorted by length, so the last one added is the widest
            if batch and (len(batch) >= self.batch_size or (len(batch) + 1) * len(encoded[i]) > self.token_budget):
                yield batch
                batch = []
            batch.append(i)
        if batch:
            yield batch

    def answer(self, messages: Sequence[dict[str, str]], **kwargs) -> Generation:
        return self.generate([messages], progress=False, **kwargs)[0]

"""Self-checks for the exercises: call one with your answer and read the verdict.

Every ``check_*`` function recomputes the right answer with the course's own code
(:mod:`ftrag.memory`, :mod:`ftrag.decide`, :mod:`ftrag.evaluate`) and returns a :class:`Feedback`.
In a notebook it shows as ``✅ ...`` or ``❌ ...`` followed by a hint that points at the usual
mistake (GB instead of GiB, a miss left out of hit@k, prose around the JSON object, ...), without
giving the number away. The right answer is kept in ``feedback.expected`` for when you give up.

A check never raises for a wrong or malformed *answer*; it says what is wrong with it. Solutions
in the book call the same checks and ``assert feedback.ok``, so a solution that stops being right
breaks the build instead of rotting quietly.

What the exercises compute with lives elsewhere: the size of a LoRA adapter from the model's layer
shapes in :mod:`ftrag.lora_targets`, the made-up article of the "teach RAG something new"
exercises in :mod:`ftrag.exercise_data`, the labs' run times in :mod:`ftrag.lab_timings`.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Any

from . import evaluate, memory
from .decide import APPROACHES, QUESTION_TEXT, SCENARIOS, decide
from .errors import CourseError
from .prompts import ANSWER_KEYS, SIGN_OFF

OK_MARK = "\u2705"
FAIL_MARK = "\u274c"
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>#|])")


# --------------------------------------------------------------------------- feedback


@dataclass(frozen=True, repr=False)
class Feedback:
    """The verdict of a check: ``ok``, a one-line ``message`` and, when wrong, a ``hint``.

    ``bool(feedback)`` is ``feedback.ok``. ``expected`` holds the right answer (not printed).
    """

    ok: bool
    message: str
    hint: str = ""
    expected: Any = None

    def __bool__(self) -> bool:
        return bool(self.ok)

    def __str__(self) -> str:
        text = f"{OK_MARK if self.ok else FAIL_MARK} {self.message}"
        if self.hint and not self.ok:
            text += f"\n   Hint: {self.hint}"
        return text

    __repr__ = __str__

    def _repr_markdown_(self) -> str:
        text = f"{OK_MARK if self.ok else FAIL_MARK} {_md(self.message)}"
        if self.hint and not self.ok:
            text += f"<br>**Hint:** {_md(self.hint)}"
        return text


def _md(text: str) -> str:
    return _MD_SPECIAL.sub(r"\\\1", text).replace("\n", "<br>")


def _right(message: str, expected: Any = None) -> Feedback:
    return Feedback(True, message, expected=expected)


def _wrong(message: str, hint: str = "", expected: Any = None) -> Feedback:
    return Feedback(False, message, hint, expected)


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or None (a string such as ``"3.2"`` is accepted)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip().replace(",", ""))
        except ValueError:
            return None
    if hasattr(value, "item"):  # numpy scalars
        value = value.item()
    if not isinstance(value, Real) or not math.isfinite(value):
        return None
    return float(value)


def _close(answer: float, expected: float, *, rel: float = 0.02, abs_tol: float = 0.0) -> bool:
    return math.isclose(answer, expected, rel_tol=rel, abs_tol=abs_tol)


def _not_a_number(what: str, value: Any) -> Feedback:
    return _wrong(f"{what} should be a number, got {value!r}.",
                  "Pass the number itself, e.g. 3.26, not a string with units.")


# --------------------------------------------------------------------------- lab 0: set-up


def check_closest_pair(embed: Callable[[str], Sequence[float]], sentences: Sequence[str], pair: Any) -> Feedback:
    """Is ``pair`` (two indexes into ``sentences``) the pair whose embeddings are most similar?

    ``embed`` is the embedding function (e.g. ``embedder.get_text_embedding``); similarity is the
    cosine of the two vectors. The message lists every pair's similarity.
    """
    if len(sentences) < 3:
        return _wrong("Give at least three sentences, so that there is a choice to make.")
    try:
        i, j = sorted(int(k) for k in pair)
    except (TypeError, ValueError):
        return _wrong(f"pair should be two sentence indexes such as (0, 2), got {pair!r}.")
    if i == j or not (0 <= i < len(sentences) and 0 <= j < len(sentences)):
        return _wrong(f"pair should name two different sentences among 0..{len(sentences) - 1}, got {pair!r}.")
    vectors = [list(map(float, embed(text))) for text in sentences]

    def cosine(a, b):
        dot = sum(x * y for x, y in zip(a, b))
        return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))

    sims = {(a, b): cosine(vectors[a], vectors[b]) for a in range(len(sentences)) for b in range(a + 1, len(sentences))}
    best = max(sims, key=sims.get)
    table = ", ".join(f"{a}-{b}: {v:.2f}" for (a, b), v in sims.items())
    if (i, j) == best:
        return _right(f"Sentences {i} and {j} are the closest in meaning (cosine {sims[best]:.2f}; all pairs: {table}).",
                      best)
    return _wrong(f"The embedder puts sentences {best[0]} and {best[1]} closest, not {i} and {j} ({table}).",
                  "Embeddings compare meaning, not shared words: a paraphrase can share few words.", best)


def check_context_share(tokens_without: int, tokens_with: int, answer: Any) -> Feedback:
    """Is ``answer`` the share of a prompt taken by the retrieved context?

    ``tokens_without``/``tokens_with``: prompt tokens of the same question without and with the
    passages. Accepted within half a percentage point; a percentage (e.g. 70) gets a hint.
    """
    if not 0 < tokens_without <= tokens_with:
        return _wrong(f"Expected 0 < tokens without context <= tokens with it, got {tokens_without} and {tokens_with}.")
    expected = (tokens_with - tokens_without) / tokens_with
    ok, value, note = _share_answer(answer, expected)
    if value is None:
        return _not_a_number("answer", answer)
    if ok:
        return _right(f"The passages are {expected:.1%} of the prompt{note}: {tokens_with - tokens_without} of "
                      f"{tokens_with} tokens, paid again on every request.", expected)
    hint = ""
    if _close(value, (tokens_with - tokens_without) / tokens_without, abs_tol=0.005):
        hint = "Divide the context's tokens by the whole prompt (with the context), not by the prompt without it."
    return _wrong(f"{value:g} is not the context's share of the prompt.",
                  hint or "share = (tokens with context - tokens without) / tokens with context.", expected)


def check_gpu_prediction(answer: Any) -> Feedback:
    """Did the learner predict whether ``profiles.get_profile("gpu")`` works on this machine?

    Runs the call; the message quotes the course's error when there is no CUDA GPU.
    """
    from . import profiles

    if not isinstance(answer, bool):
        return _wrong(f"Answer True (it will work) or False (it will fail), got {answer!r}.")
    try:
        profile = profiles.get_profile("gpu")
        works, what = True, f"it works here: {profile.model_label} on {profiles.device_summary(profile)}"
    except CourseError as exc:
        works, what = False, f"it fails here with the course's one-line message: {exc}"
    if answer == works:
        return _right(f"Right, {what}", works)
    return _wrong(f"Not this time: {what}",
                  "The gpu profile needs a CUDA GPU that PyTorch can see (torch.cuda.is_available()).", works)


# --------------------------------------------------------------------------- weight memory


def check_weight_memory(n_params: float, bits: float, answer_gib: Any) -> Feedback:
    """Is ``answer_gib`` the memory (GiB) that ``n_params`` weights take at ``bits`` bits each?

    Accepted within 2 % (rounding). For 4 bits, the NF4 size including its block constants is
    accepted too. GB (10**9 bytes) instead of GiB (2**30), and bits instead of bytes, get a hint.
    """
    try:
        expected = memory.weight_gib(n_params, bits)
    except CourseError as exc:
        return _wrong(f"These inputs are not a model: {exc}", "Give a positive parameter count and bits.")
    answer = _number(answer_gib)
    if answer is None:
        return _not_a_number("answer_gib", answer_gib)
    n_bytes = memory.weight_bytes(n_params, bits)
    what = f"{n_params:,.0f} parameters at {bits:g} bits"
    if _close(answer, expected, abs_tol=0.005):
        return _right(f"{what} take {n_bytes / memory.GB:,.3g} GB = {expected:,.3g} GiB.", expected)
    if bits == 4:
        with_constants = memory.weight_gib(n_params, memory.nf4_bits_per_param())
        if _close(answer, with_constants, abs_tol=0.005):
            return _right(f"{what} take {expected:,.3g} GiB; your {answer:,.3g} GiB also counts NF4's "
                          f"block constants ({memory.nf4_bits_per_param():.3f} bits per weight).", expected)
    hint = "bytes = parameters x bits / 8, and 1 GiB = 2**30 bytes."
    if _close(answer, n_bytes / memory.GB, abs_tol=0.005):
        hint = "That is the size in GB (10**9 bytes). GiB divides by 2**30 = 1,073,741,824."
    elif _close(answer, expected * 8):
        hint = "A byte holds 8 bits: divide parameters x bits by 8 before converting to GiB."
    elif _close(answer, expected * 1024):
        hint = "That looks like MiB. Divide by 1024 once more for GiB."
    elif _close(answer, n_bytes):
        hint = "That is the size in bytes. Divide by 2**30 for GiB."
    elif _close(answer, expected * 8 / bits):
        hint = "That is one byte per parameter; use the bits you were given (bits / 8 bytes each)."
    return _wrong(f"{answer:,.4g} GiB is not what {what} take.", hint, expected)


# --------------------------------------------------------------------------- LoRA


def check_lora_params(d_in: int, d_out: int, rank: int, answer: Any) -> Feedback:
    """Is ``answer`` the number of trainable LoRA parameters of one ``d_in x d_out`` layer?"""
    try:
        expected = memory.lora_params(d_in, d_out, rank)
    except CourseError as exc:
        return _wrong(f"These inputs do not describe a LoRA layer: {exc}",
                      "Use whole, positive sizes and a rank no larger than the layer.")
    value = _number(answer)
    if value is None:
        return _not_a_number("answer", answer)
    layer = f"a {d_in}x{d_out} layer at rank {rank}"
    if value == expected:
        share = expected / memory.full_layer_params(d_in, d_out)
        return _right(f"{expected:,} trainable parameters for {layer}, {share:.2%} of the "
                      f"{d_in * d_out:,} in the frozen weight.", expected)
    hint = "LoRA trains A (d_in x r) and B (r x d_out): count the numbers in both."
    if value == d_in * d_out:
        hint = "That is the frozen weight W itself, which LoRA does not train."
    elif value in (rank * d_in, rank * d_out) and d_in != d_out:
        hint = "That is only one of the two matrices; add the other one."
    elif value == rank * d_in * d_out:
        hint = "A and B are thin: d_in x r plus r x d_out, not r copies of the full layer."
    elif value == d_in + d_out:
        hint = "Right shape, but each of the d_in + d_out rows/columns has r numbers: multiply by the rank."
    elif value == rank * rank:
        hint = "A and B are not r x r; one side of each is the layer's width."
    return _wrong(f"{value:,.0f} is not the LoRA parameter count of {layer}.", hint, expected)


def check_adapter_size(rank_small_mb: Any, rank_big_mb: Any, *,
                       ranks: tuple[int, int] | None = None) -> Feedback:
    """Is the adapter of the larger rank larger, roughly in proportion to the ranks?

    ``ranks=(small, big)`` makes the proportion part of the check (within 15 %); without it only
    the direction is checked.
    """
    small, big = _number(rank_small_mb), _number(rank_big_mb)
    if small is None or small <= 0:
        return _not_a_number("rank_small_mb (a positive size)", rank_small_mb)
    if big is None or big <= 0:
        return _not_a_number("rank_big_mb (a positive size)", rank_big_mb)
    ratio = big / small
    why = "each adapted layer stores rank x (d_in + d_out) numbers, so the file grows linearly with the rank"
    if big <= small:
        return _wrong(f"The higher-rank adapter ({big:.2f} MB) is not larger than the lower-rank one "
                      f"({small:.2f} MB).", f"Check the argument order and the rank each size came from: {why}.")
    if ranks is None:
        return _right(f"The higher-rank adapter is {ratio:.2f}x larger ({small:.2f} -> {big:.2f} MB).")
    r_small, r_big = ranks
    if not (isinstance(r_small, int) and isinstance(r_big, int) and 0 < r_small < r_big):
        return _wrong(f"ranks should be two whole numbers, small first, got {ranks!r}.")
    expected = r_big / r_small
    if _close(ratio, expected, rel=0.15):
        return _right(f"{small:.2f} MB at rank {r_small} -> {big:.2f} MB at rank {r_big}: {ratio:.2f}x, "
                      f"close to the rank ratio {expected:.2f}x, because {why}.", expected)
    return _wrong(f"{small:.2f} MB -> {big:.2f} MB is {ratio:.2f}x, far from the rank ratio {expected:.2f}x.",
                  f"Were both adapters put on the same layers and saved in the same dtype? {why}.", expected)


# --------------------------------------------------------------------------- costs


def check_break_even(upfront_usd: float, tokens_saved_per_request: float,
                     price_per_million_tokens: float, answer_requests: Any) -> Feedback:
    """Is ``answer_requests`` the number of requests after which a one-off cost of ``upfront_usd``
    is paid back by saving ``tokens_saved_per_request`` tokens on every request?"""
    inputs = (upfront_usd, tokens_saved_per_request, price_per_million_tokens)
    if any(_number(v) is None or _number(v) <= 0 for v in inputs):
        return _wrong(f"The up-front cost, the tokens saved and the price should be positive numbers, got {inputs!r}.")
    saving = _number(tokens_saved_per_request) * _number(price_per_million_tokens) / 1e6
    expected = _number(upfront_usd) / saving
    answer = _number(answer_requests)
    if answer is None:
        return _not_a_number("answer_requests", answer_requests)
    if _close(answer, expected, rel=0.02):
        return _right(f"Each request saves ${saving:.6f}; ${_number(upfront_usd):,.0f} is paid back after "
                      f"{expected:,.0f} requests.", expected)
    hint = "Saving per request = tokens saved x price per million / 1,000,000; then up-front cost / saving."
    if _close(answer, expected / 1e6, rel=0.02):
        hint = "The price is per million tokens: divide it by 1,000,000 to get the price of one token."
    elif _close(answer, expected * _number(tokens_saved_per_request), rel=0.02):
        hint = "Multiply the price of one token by the tokens saved on each request."
    elif _close(answer, expected / 1e6 / _number(tokens_saved_per_request), rel=0.02):
        hint = "Two steps are missing: the price is per million tokens, and each request saves many tokens."
    return _wrong(f"{answer:,.0f} requests is not the break-even point.", hint, expected)


# --------------------------------------------------------------------------- decision


_APPROACH_SPELLINGS = {
    "retrieval": "rag", "retrieval-augmented generation": "rag", "rag only": "rag",
    "finetune": "fine-tune", "fine tune": "fine-tune", "fine-tuning": "fine-tune",
    "finetuning": "fine-tune", "fine tuning": "fine-tune", "lora": "fine-tune", "qlora": "fine-tune",
    "both": "hybrid", "rag + fine-tune": "hybrid", "rag+fine-tune": "hybrid",
    "fine-tune + rag": "hybrid", "prompting": "prompting first", "prompt": "prompting first",
    "prompting-first": "prompting first", "prompt engineering": "prompting first",
    "better prompting": "prompting first",
}


def _approach(name: Any) -> str | None:
    if not isinstance(name, str):
        return None
    key = " ".join(name.strip().lower().split())
    key = _APPROACH_SPELLINGS.get(key, key)
    return key if key in APPROACHES else None


def check_decision(scenario_answers: Mapping[str, Any] | str, approach: Any) -> Feedback:
    """Does ``approach`` match what :func:`ftrag.decide.decide` recommends for this situation?

    ``scenario_answers`` holds the keyword arguments of ``decide()`` (``problem``,
    ``knowledge_changes_often``, ...) or is the name of one of :data:`ftrag.decide.SCENARIOS`.
    ``approach`` is one of ``"rag"``, ``"fine-tune"``, ``"hybrid"``, ``"prompting first"``.
    """
    if isinstance(scenario_answers, str):
        by_name = {s.name.lower(): s for s in SCENARIOS}
        scenario = by_name.get(scenario_answers.strip().lower())
        if scenario is None:
            return _wrong(f"No scenario is called {scenario_answers!r}.",
                          "Use a name from ftrag.decide.SCENARIOS, or a dict of decide()'s arguments.")
        inputs = dict(scenario.inputs)
    elif isinstance(scenario_answers, Mapping):
        inputs = dict(scenario_answers)
    else:
        return _wrong("scenario_answers should be a dict of decide()'s arguments or a scenario name.")
    chosen = _approach(approach)
    if chosen is None:
        return _wrong(f"{approach!r} is not one of the four approaches.",
                      f"Answer with one of {', '.join(repr(a) for a in APPROACHES)}.")
    try:
        rec = decide(**inputs)
    except TypeError as exc:
        return _wrong(f"The situation is not described the way decide() expects ({exc}).",
                      "Required: problem, knowledge_changes_often, needs_citations, has_labelled_data, "
                      "needs_strict_format_or_voice; optional: prompting_tried, high_volume.")
    except CourseError as exc:
        return _wrong(f"The situation is not described the way decide() expects: {exc}")
    if chosen == rec.approach:
        return _right(f"{rec.approach}: {rec.reasons[-1]}.", rec.approach)
    walk = " -> ".join(f"{QUESTION_TEXT[key]} {'yes' if answer else 'no'}" for key, answer in rec.path)
    return _wrong(f"The rules do not recommend {chosen!r} here.",
                  f"Walk the questions in order: {walk}", rec.approach)


# --------------------------------------------------------------------------- retrieval metrics


def _ranks(ranks: Any) -> list[int | None] | Feedback:
    if isinstance(ranks, (str, bytes)) or not isinstance(ranks, Iterable):
        return _wrong("ranks should be a list with one entry per question: the rank of the first gold "
                      "chunk (1 = top), or None when it was not retrieved.")
    out: list[int | None] = []
    for r in ranks:
        if r is None:
            out.append(None)
        elif isinstance(r, bool) or _number(r) is None or _number(r) < 1 or int(_number(r)) != _number(r):
            return _wrong(f"{r!r} is not a rank: ranks are whole numbers from 1 (top), or None for a miss.")
        else:
            out.append(int(_number(r)))
    if not out:
        return _wrong("ranks is empty: there are no questions to score.")
    return out


def _share_answer(answer: Any, expected: float, *, abs_tol: float = 0.005) -> tuple[bool, float | None, str]:
    """(accepted, value, note): a share in 0..1, or a percentage that matches it."""
    value = _number(answer)
    if value is None:
        return False, None, ""
    if _close(value, expected, rel=0.01, abs_tol=abs_tol):
        return True, value, ""
    if value > 1 and _close(value / 100, expected, rel=0.01, abs_tol=abs_tol):
        return True, value, f" (read {value:g} as a percentage)"
    return False, value, ""


def check_hit_at_k(ranks: Sequence[int | None], k: int, answer: Any) -> Feedback:
    """Is ``answer`` hit@k for these first-gold ranks (None = gold not retrieved at all)?

    hit@k is the share of *all* questions whose first gold chunk is at rank k or better.
    """
    checked = _ranks(ranks)
    if isinstance(checked, Feedback):
        return checked
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        return _wrong(f"k should be a whole number from 1, got {k!r}.")
    n = len(checked)
    hits = sum(1 for r in checked if r is not None and r <= k)
    expected = hits / n
    accepted, value, note = _share_answer(answer, expected)
    if value is None:
        return _not_a_number("answer", answer)
    if accepted:
        return _right(f"hit@{k} = {hits}/{n} = {expected:.3f}{note}.", expected)
    found = [r for r in checked if r is not None]
    hint = f"Count the questions whose rank is 1..{k}, and divide by all {n} questions."
    if value == hits and hits > 1:
        hint = "That is a count; hit@k is a share of the questions (divide by how many there are)."
    elif found and len(found) < n and _close(value, hits / len(found), rel=0.005):
        hint = "Questions whose gold was never retrieved (None) are misses: they stay in the denominator."
    elif _close(value, sum(1 for r in checked if r == k) / n, rel=0.005):
        hint = f"hit@{k} counts every rank up to {k}, not only rank {k} itself."
    elif _close(value, sum(1 for r in checked if r is not None and r < k) / n, rel=0.005):
        hint = f"Rank {k} itself still counts: the test is rank <= {k}."
    return _wrong(f"{value:g} is not hit@{k} for these ranks.", hint, expected)


def check_mrr(ranks: Sequence[int | None], answer: Any) -> Feedback:
    """Is ``answer`` the mean reciprocal rank (a miss contributes 0)?"""
    checked = _ranks(ranks)
    if isinstance(checked, Feedback):
        return checked
    n = len(checked)
    found = [r for r in checked if r is not None]
    expected = sum(1 / r for r in found) / n
    value = _number(answer)
    if value is None:
        return _not_a_number("answer", answer)
    if _close(value, expected, rel=0.01, abs_tol=0.002):
        return _right(f"MRR = mean of 1/rank over {n} questions = {expected:.3f}.", expected)
    hint = "Take 1/rank for each question (0 for None), then the mean over all questions."
    if found and len(found) < n and _close(value, sum(1 / r for r in found) / len(found), rel=0.005):
        hint = "A miss (None) contributes 0 but still counts as a question: divide by all of them."
    elif found and _close(value, sum(found) / len(found), rel=0.005):
        hint = "That is the mean rank. MRR averages the reciprocals 1/rank."
    elif found and _close(value, len(found) / sum(found), rel=0.005):
        hint = "That is 1 / (mean rank). MRR takes the reciprocal of each rank first, then the mean."
    return _wrong(f"{value:g} is not the MRR of these ranks.", hint, expected)


def _sweep_rows(rows: Any, metric: str) -> list[dict[str, Any]] | Feedback:
    """Normalise a chunking sweep to dicts: label, size, comparable (sentence splitter with title), value."""
    m = re.fullmatch(r"hit@(\d+)|mrr", metric.strip().lower())
    if not m:
        return _wrong(f"metric {metric!r} is not one of 'hit@k' (e.g. 'hit@5') or 'mrr'.")
    k = int(m.group(1)) if m.group(1) else None
    out = []
    for row in rows:
        if isinstance(row, tuple) and len(row) == 2 and hasattr(row[0], "chunking"):  # rag.chunking_sweep
            info, report = row
            chunking = info.chunking
            label, size = chunking.label, chunking.chunk_size
            comparable = chunking.splitter == "sentence" and chunking.with_title
            value = report.mrr if k is None else report.hit_at.get(k)
        elif isinstance(row, Mapping):
            label = str(row.get("label", row.get("chunking", "")))
            size = row.get("chunk_size")
            if size is None:
                found = re.search(r"\d+", label)
                size = int(found.group()) if found else None
            comparable = "token" not in label and "no title" not in label
            if k is None:
                value = row.get("mrr", row.get("MRR"))
            else:
                value = row.get(f"hit@{k}", row.get(f"hit_at_{k}"))
                if value is None and isinstance(row.get("hit_at"), Mapping):
                    value = row["hit_at"].get(k)
        else:
            return _wrong(f"Cannot read the sweep row {row!r}.",
                          "Pass what rag.chunking_sweep returns, or dicts with 'chunking', 'chunk_size' "
                          "and the metric ('hit@5' or 'mrr').")
        if _number(value) is None or size is None:
            return _wrong(f"The row {label!r} has no chunk size or no {metric} value.")
        out.append({"label": label, "size": int(size), "comparable": comparable, "value": float(value)})
    if len(out) < 2:
        return _wrong("A sweep needs at least two chunkings to compare.")
    return out


def check_chunk_sweep_claim(rows: Any, claim: Any, *, metric: str = "hit@5") -> Feedback:
    """Does the chunking sweep support ``claim`` on ``metric`` (``"hit@5"``, ``"hit@1"``, ``"mrr"``)?

    ``rows`` is what :func:`ftrag.rag.chunking_sweep` returns, or a list of dicts with
    ``chunking`` (label), ``chunk_size`` and the metric. ``claim`` is one of:

    * ``"bigger is better"`` / ``"smaller is better"``: the metric never drops as chunks grow
      (shrink) and ends higher; compared over the sentence-splitter rows that keep the title;
    * ``"size does not matter"``: all those rows within 2 points of each other;
    * ``"best: <label or size>"`` / ``"worst: <label or size>"`` (a bare label or size means best).
    """
    table = _sweep_rows(rows, metric)
    if isinstance(table, Feedback):
        return table
    listing = ", ".join(f"{r['label']} {r['value']:.3f}" for r in table)
    if not isinstance(claim, (str, int)) or isinstance(claim, bool):
        return _wrong(f"claim should be a sentence or a chunking, got {claim!r}.")
    text = " ".join(str(claim).strip().lower().split())
    comparable = sorted((r for r in table if r["comparable"]), key=lambda r: r["size"]) or \
        sorted(table, key=lambda r: r["size"])
    values = [r["value"] for r in comparable]
    span = ", ".join(f"{r['size']} -> {r['value']:.3f}" for r in comparable)

    def monotone(seq):
        return all(b >= a - 1e-9 for a, b in zip(seq, seq[1:])) and seq[-1] > seq[0]

    if text in ("bigger is better", "larger is better", "bigger chunks are better", "larger chunks are better",
                "smaller is better", "smaller chunks are better"):
        bigger = text.startswith(("bigger", "larger"))
        holds = monotone(values if bigger else values[::-1])
        direction = "grow" if bigger else "shrink"
        if holds:
            return _right(f"Yes: {metric} never drops as the chunks {direction} ({span}).", True)
        return _wrong(f"The sweep does not support this: {metric} by chunk size is {span}.",
                      "Look for a drop between two neighbouring sizes: one counter-example is enough.", False)
    if text in ("size does not matter", "chunk size does not matter", "no difference"):
        spread = max(values) - min(values)
        if spread <= 0.02:
            return _right(f"Yes: {metric} stays within {spread:.3f} across sizes ({span}).", True)
        return _wrong(f"{metric} moves by {spread:.3f} across chunk sizes ({span}).",
                      "A spread above 2 points is more than rounding; compare the highest and lowest.", False)
    m = re.fullmatch(r"(best|worst)\s*[:=]?\s*(.+)", text)
    which, target = (m.group(1), m.group(2)) if m else ("best", text)
    pick = max if which == "best" else min
    extreme = pick(r["value"] for r in table)
    winners = [r for r in table if abs(r["value"] - extreme) <= 1e-9]
    named = [r for r in table if r["label"].lower() == target or str(r["size"]) == target]
    if not named:
        return _wrong(f"No chunking in the sweep is called {target!r}.",
                      f"Name one of: {', '.join(r['label'] for r in table)} (or its chunk size).")
    if any(r in winners for r in named):
        tie = " (tied)" if len(winners) > 1 else ""
        return _right(f"Yes: {named[0]['label']} has the {which} {metric}, {extreme:.3f}{tie}.",
                      [r["label"] for r in winners])
    return _wrong(f"{named[0]['label']} does not have the {which} {metric} ({named[0]['value']:.3f}).",
                  f"Compare all rows: {listing}.", [r["label"] for r in winners])


# --------------------------------------------------------------------------- replies


def _reply_text(reply: Any) -> str | None:
    """The raw text of a reply given as a string, an :class:`~ftrag.systems.Answer` or a Generation."""
    if isinstance(reply, str):
        return reply
    parsed = getattr(reply, "parsed", None)
    if parsed is not None and isinstance(getattr(parsed, "raw", None), str):
        return parsed.raw
    text = getattr(reply, "text", None)
    return text if isinstance(text, str) else None


def _json_hint(text: str, problem: str) -> str:
    stripped = text.strip()
    if not stripped:
        return "The reply is empty; it must be one JSON object."
    if stripped.startswith("```"):
        return "Drop the Markdown code fence (```json ... ```): the whole reply must be the bare object."
    if stripped.startswith("{") and not stripped.endswith("}") and "}" not in stripped[-40:]:
        return ("The object is cut off before its closing brace: the reply ran into the token limit "
                "(max_new_tokens). A shorter answer, or a model trained to stop, fixes it.")
    if "{" in stripped and not (stripped.startswith("{") and stripped.endswith("}")):
        return ("There is text before or after the object. A parser reads the whole reply, so nothing "
                "but the object may be there, not even a greeting.")
    if "'" in stripped and re.search(r"[{,]\s*'", stripped):
        return "JSON strings and keys need double quotes, not single quotes."
    if re.search(r",\s*[}\]]", stripped):
        return "Remove the trailing comma before } or ]."
    if re.search(r":\s*(True|False|None)\b", stripped):
        return "JSON writes true, false and null in lower case."
    if problem.startswith("keys"):
        try:
            obj = json.loads(stripped)
        except ValueError:
            obj = {}
        missing = [k for k in ANSWER_KEYS if k not in obj]
        extra = sorted(k for k in obj if k not in ANSWER_KEYS)
        parts = []
        if missing:
            parts.append(f"add {', '.join(missing)}")
        if extra:
            parts.append(f"remove {', '.join(extra)}")
        return f"The schema has exactly {', '.join(ANSWER_KEYS)}: {' and '.join(parts)}."
    if problem.startswith("sources"):
        return 'sources is a list of id strings, even for one id: ["kb-plan-plus"]; [] when none was used.'
    if problem.startswith("needs_human"):
        return "needs_human is true or false without quotes."
    if problem.startswith("answer"):
        return "answer is one string: the reply to the customer."
    if problem.startswith("JSON but not"):
        return "The reply must be one object {...}, not a list or a bare string."
    return 'Check the quotes and braces: {"answer": "...", "sources": [...], "needs_human": false}.'


def check_json_reply(text: Any) -> Feedback:
    """Is ``text`` one schema-valid reply ``{"answer", "sources", "needs_human"}``
    (:func:`ftrag.evaluate.parse_reply`)? If not, says what is wrong."""
    raw = _reply_text(text)
    if raw is None:
        return _wrong(f"Expected the reply text (a string), got {type(text).__name__}.")
    parsed = evaluate.parse_reply(raw)
    if parsed.valid:
        handoff = "hands off to a person" if parsed.needs_human else "answers itself"
        cited = ", ".join(parsed.sources) if parsed.sources else "no sources"
        return _right(f"Schema-valid: it {handoff} and cites {cited}.", True)
    return _wrong(f"Not schema-valid: {parsed.problem}.", _json_hint(raw, parsed.problem), False)


_VOICE_FIXES = {
    "concise": lambda answer: (f"It has {len(answer.split())} words; keep it to "
                               f"{evaluate.MAX_ANSWER_WORDS} or fewer." if answer.split()
                               else "The answer is empty."),
    "second_person": lambda answer: "Speak to the customer: use 'you' or 'your'.",
    "no_disclaimer": lambda answer: ("Drop the AI talk (" + ", ".join(
        repr(d) for d in evaluate.DISCLAIMERS if d in answer.lower()) + ")."),
    "sign_off": lambda answer: f'End with the sign-off "{SIGN_OFF}" as the very last words.',
}


def check_voice(text: Any) -> Feedback:
    """Does the answer follow Lumio's voice rules (:func:`ftrag.evaluate.voice_checks`)?

    ``text`` may be a whole JSON reply (its ``answer`` field is checked) or the answer text alone.
    """
    raw = _reply_text(text)
    if raw is None:
        return _wrong(f"Expected the answer text (a string), got {type(text).__name__}.")
    parsed = evaluate.parse_reply(raw)
    answer = parsed.answer if parsed.valid else raw.strip()
    checks = evaluate.voice_checks(answer)
    failed = [rule for rule, passed in checks.items() if not passed]
    if not failed:
        return _right(f"All {len(checks)} voice rules pass: {', '.join(checks)}.", checks)
    return _wrong(f"{len(failed)} of {len(checks)} voice rules fail: {', '.join(failed)}.",
                  " ".join(_VOICE_FIXES[rule](answer) for rule in failed), checks)


def check_new_article_answer(reply_text: Any, expected_variants: str | Sequence[str], *,
                             article_id: str | None = None) -> Feedback:
    """Does the reply use the fact from a newly added article?

    ``reply_text`` is the raw reply or a :class:`~ftrag.systems.Answer` (then the retrieved passages
    are checked too); ``expected_variants`` are accepted spellings of the new fact, matched like the
    course's gold answers (:func:`ftrag.evaluate.matches`). With ``article_id``, the new article
    must have been retrieved (for an Answer) and, when the reply cites sources, be among them.
    """
    raw = _reply_text(reply_text)
    if raw is None:
        return _wrong(f"Expected the reply (a string or a systems.Answer), got {type(reply_text).__name__}.")
    variants = (expected_variants,) if isinstance(expected_variants, str) else tuple(expected_variants)
    if not variants or not all(isinstance(v, str) and v.strip() for v in variants):
        return _wrong("expected_variants should be the new fact as one or more non-empty strings.")
    parsed = evaluate.parse_reply(raw)
    retrieved = [c.article_id for c in getattr(reply_text, "retrieved", ())]
    if article_id and retrieved and article_id not in retrieved:
        return _wrong(f"The new article {article_id} was not among the retrieved passages ({', '.join(retrieved)}).",
                      "Did apply_update run on the index this retriever searches? Build the Retriever "
                      "after the update, from the updated IndexInfo.")
    if not evaluate.matches(parsed.answer, variants):
        hint = ("Print the retrieved passages: if the new article is there, the generator missed the fact; "
                "if it is not, the index was not updated or the question does not match the article's wording.")
        if hasattr(reply_text, "retrieved") and not retrieved:
            hint = ("This system retrieves nothing: its weights have never seen the new article, so it can "
                    "only guess or hand off. Only a retrieval system (or a new training run) can know it.")
        if parsed.needs_human:
            hint = "The model handed off, which is what it should do when the context lacks the fact. " + hint
        return _wrong(f"The reply does not contain the new fact ({' / '.join(variants)}).", hint, variants)
    note = ""
    if article_id and parsed.valid and parsed.sources and article_id not in parsed.sources:
        note = f" It does not cite {article_id}, though."
    return _right(f"The reply states the new fact ({' / '.join(variants)}): knowledge updated without "
                  f"training.{note}", variants)


def check_label_mask(encoded: Mapping[str, Sequence[int]], eos_token_id: int) -> Feedback:
    """Is a training example masked so the model learns the reply and when to stop?

    ``encoded`` has ``input_ids`` and ``labels`` (as :func:`ftrag.encoding.encode_example` returns).
    Right: ``-100`` over the prompt, then the labels equal the input ids up to and including the
    final end-of-turn token (``eos_token_id``), which must *not* be masked even when pad = eos.
    """
    ids, labels = list(encoded.get("input_ids", ())), list(encoded.get("labels", ()))
    if not ids or len(ids) != len(labels):
        return _wrong("input_ids and labels should be two lists of the same, non-zero length.")
    trained = [i for i, label in enumerate(labels) if label != -100]
    if not trained:
        return _wrong("Every label is -100: nothing would be learned from this example.",
                      "Mask the prompt only; the reply's tokens keep their ids as labels.")
    start = trained[0]
    if any(label == -100 for label in labels[start:]) or labels[start:] != ids[start:]:
        if labels[-1] == -100 and ids[-1] == eos_token_id and labels[start:-1] == ids[start:-1]:
            return _wrong("The final end-of-turn token is masked: the model never learns to stop.",
                          "This is the pad = eos trap: masking every pad id also hides the real eos. "
                          "Mask by position (the prompt), not by token id.")
        return _wrong("After the prompt, the labels should equal the input ids token for token.",
                      "Copy the reply's ids into labels; only the prompt part is -100.")
    if ids[-1] != eos_token_id:
        return _wrong("The example does not end with the end-of-turn token.",
                      "Append the tokenizer's eos to the reply before tokenising, and keep its label.")
    if start == 0:
        return _wrong("No prompt token is masked: the model would also learn to write the questions.",
                      "Set the labels of the system prompt, context and question to -100.")
    return _right(f"{len(ids) - start} of {len(ids)} tokens are trained (the reply and its end-of-turn "
                  f"token); the {start} prompt tokens are masked.", len(ids) - start)

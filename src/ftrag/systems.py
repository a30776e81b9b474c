"""The four systems the course compares, and the one evaluation harness they all go through.

=============  ==========================  ==================
system         weights                     context
=============  ==========================  ==================
``base``       the profile's model         none
``rag``        the profile's model         top-k retrieved chunks
``finetuned``  model + behaviour adapter   none
``hybrid``     model + behaviour adapter   top-k retrieved chunks
=============  ==========================  ==================

All four send the same system prompt (:mod:`ftrag.prompts`) and are scored by the same functions,
so their numbers are comparable by construction.

A retrieval system can also put a **hand-off gate** in front of its model (``System(...,
handoff_below=t)``): when the best retrieved chunk's similarity is below ``t``, the question never
reaches the model and the system sends the fixed hand-off reply. The threshold is chosen on the dev
split (``make sweeps-gate``, :func:`ftrag.sweeps.pick_handoff_gate`).
"""
from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from . import evaluate, prompts, shipped_replies
from .errors import CourseError
from .evaluate import ParsedReply
from .generation import GENERATION_VERSION, Generation, Generator  # noqa: F401  (re-exported)
from .rag import RetrievedChunk, Retriever, passages


@dataclass(frozen=True)
class Answer:
    """One system's answer to one question, with everything the metrics need."""

    question_id: str
    question: str
    reply: Generation
    parsed: ParsedReply
    retrieved: tuple[RetrievedChunk, ...] = ()
    retrieval_seconds: float = 0.0

    @property
    def text(self) -> str:
        """The answer text: the schema's ``answer`` field, or the raw reply when it is not JSON."""
        return self.parsed.answer

    @property
    def sources(self) -> tuple[str, ...]:
        """Sources the system reports: the ids the model wrote in a schema-valid reply, and nothing
        else. (Crediting an invalid reply with what retrieval found would score retrieval, not the
        system: that is :attr:`retrieved_ids`.)"""
        return self.parsed.sources if self.parsed.valid else ()

    @property
    def retrieved_ids(self) -> tuple[str, ...]:
        """The articles retrieval put in the prompt, best first (llama-index's source nodes)."""
        return tuple(dict.fromkeys(c.article_id for c in self.retrieved))

    @property
    def latency(self) -> float:
        return self.reply.seconds + self.retrieval_seconds


#: What a gated system sends instead of asking its model: the schema's hand-off, in the brand voice.
GATED_REPLY = Generation(text=prompts.answer_json(prompts.HANDOFF_ANSWER, [], needs_human=True),
                         prompt_tokens=0, new_tokens=0, seconds=0.0, batch_seconds=0.0)


@dataclass
class System:
    name: str
    generator: Generator
    retriever: Retriever | None = None
    examples: tuple[dict[str, str], ...] = ()  # few-shot turns between the system prompt and the question
    instruction: str = "json"  # the system prompt (ftrag.prompts.INSTRUCTIONS): the answer schema unless changed
    # Hand off without asking the model when the best chunk's score (a cosine similarity with the dense
    # retriever) is below this; 0 = no gate.
    handoff_below: float = 0.0

    def __post_init__(self):
        if self.handoff_below and self.retriever is None:
            raise CourseError(f"System {self.name!r}: a hand-off gate reads retrieval scores; give it a retriever.")
        if self.handoff_below and getattr(self.retriever, "mode", "dense") != "dense":
            raise CourseError(f"System {self.name!r}: the hand-off gate's threshold is a cosine similarity, which only "
                              f"the dense retriever scores; use mode='dense', not {self.retriever.mode!r}.")

    @property
    def uses_retrieval(self) -> bool:
        return self.retriever is not None

    def gated(self, retrieved: Sequence[RetrievedChunk]) -> bool:
        """Whether the gate hands this question off before the model sees it."""
        return self.handoff_below > 0 and (not retrieved or retrieved[0].score < self.handoff_below)

    def conversations(self, questions: Sequence[str]):
        if self.retriever is None:
            return ([prompts.chat(q, examples=self.examples, instruction=self.instruction) for q in questions],
                    [()] * len(questions),
                    [0.0] * len(questions))
        retrieved, seconds = self.retriever.retrieve_many(questions)
        convs = [prompts.chat(q, passages(chunks), self.examples, self.instruction)
                 for q, chunks in zip(questions, retrieved)]
        return convs, [tuple(c) for c in retrieved], seconds

    def ask(self, items: Sequence[tuple[str, str]], *, desc: str | None = None,
            max_new_tokens: int | None = None) -> list[Answer]:
        """Answer ``(question_id, question)`` pairs in batches (``max_new_tokens``: the generator's
        limit unless given)."""
        ids = [i for i, _ in items]
        questions = [q for _, q in items]
        convs, retrieved, seconds = self.conversations(questions)
        gated = [self.gated(chunks) for chunks in retrieved]
        asked = [conv for conv, g in zip(convs, gated) if not g]
        generated = iter(self.generator.generate(asked, desc=desc or f"{self.name}: answering",
                                                 max_new_tokens=max_new_tokens) if asked else ())
        replies = [GATED_REPLY if g else next(generated) for g in gated]
        return [Answer(i, q, r, evaluate.parse_reply(r.text), ctx, s)
                for i, q, r, ctx, s in zip(ids, questions, replies, retrieved, seconds)]


def base_generator(profile, model=None, tokenizer=None, constraint=None) -> Generator:
    """A Generator over the profile's untouched model; its reply cache is shared by every lab.
    ``constraint`` (:class:`ftrag.constrained.JsonConstraint`) holds replies to the answer schema
    while they are generated, with a cache of its own."""
    from . import profiles

    model = model if model is not None else profiles.load_model(profile)
    tokenizer = tokenizer if tokenizer is not None else profiles.load_tokenizer(profile)
    tag = f"{profile.name}-{profile.model_label}-base-{GENERATION_VERSION}"
    return Generator(model, tokenizer, max_new_tokens=profile.max_new_tokens, batch_size=profile.generation_batch_size,
                     cache_tag=f"{tag}-{constraint.tag}" if constraint is not None else tag, constraint=constraint,
                     shipped_dir=shipped_replies.folder(profile.name))


def tuned_generator(profile, adapter_dir, tokenizer=None) -> Generator:
    """A Generator over the profile's full-precision base with the adapter merged in
    (:func:`ftrag.adapters.load_tuned`); its reply cache is keyed by the adapter's weights, so every
    lab and benchmark that asks the same adapter the same prompt reuses the reply."""
    from . import adapters, profiles

    tokenizer = tokenizer if tokenizer is not None else profiles.load_tokenizer(profile)
    return Generator(adapters.load_tuned(profile, adapter_dir), tokenizer, max_new_tokens=profile.max_new_tokens,
                     batch_size=profile.generation_batch_size,
                     cache_tag=adapters.adapter_cache_tag(profile, adapter_dir),
                     shipped_dir=shipped_replies.folder(profile.name))


def constrained_generator(profile, model=None, tokenizer=None, **limits):
    """:func:`base_generator` with its replies held to the answer schema while they are generated
    (:class:`ftrag.constrained.JsonConstraint`; ``limits``: its ``max_answer_chars`` and
    ``max_sources``). ``generator.constraint`` keeps the measured overhead."""
    from . import profiles
    from .constrained import JsonConstraint

    model = model if model is not None else profiles.load_model(profile)
    tokenizer = tokenizer if tokenizer is not None else profiles.load_tokenizer(profile)
    return base_generator(profile, model, tokenizer, JsonConstraint(tokenizer, model.config.vocab_size, **limits))


def evaluation_questions(course, profile):
    """The **test-split** knowledge and unanswerable questions the reported measurements use.

    With the profile's limits the subset is fixed and stratified: every question whose answer
    changes after the update comes first (capped at half the limit, the freshness measurement
    needs them), then the others evenly spaced through the file, so each topic keeps its share.
    Without limits, the whole test split. Settings are never chosen on these (see
    :mod:`ftrag.sweeps`, which reads ``course.dev``).
    """
    knowledge, unanswerable = list(course.test.knowledge), list(course.test.unanswerable)
    if profile.eval_knowledge_limit and profile.eval_knowledge_limit < len(knowledge):
        limit = profile.eval_knowledge_limit
        changed = [q for q in knowledge if q.changes_after_update][: limit // 2 + limit % 2]
        rest = [q for q in knowledge if q not in changed]
        picked = evaluate.evenly_spaced(rest, limit - len(changed))
        chosen = {q.id for q in changed + picked}
        knowledge = [q for q in knowledge if q.id in chosen]
    if profile.eval_unanswerable_limit and profile.eval_unanswerable_limit < len(unanswerable):
        step = len(unanswerable) / profile.eval_unanswerable_limit
        unanswerable = [unanswerable[int(i * step)] for i in range(profile.eval_unanswerable_limit)]
    return knowledge, unanswerable


# --------------------------------------------------------------------------- metrics over answers

def is_handoff(answer: Answer) -> bool:
    """The system declined and handed over (:func:`ftrag.evaluate.is_handoff`, one rule for all)."""
    return evaluate.is_handoff(answer.parsed)


def is_correct(answer: Answer, accepted: Sequence[str]) -> bool:
    """The answer states a gold value and no conflicting one (:func:`ftrag.evaluate.is_correct`)."""
    return evaluate.is_correct(answer.text, accepted)


def cites_gold(answer: Answer, gold_ids: Sequence[str]) -> bool:
    """The valid reply cites at least one gold article, and none was invented (every cited id
    was among the retrieved passages; a system without retrieval has nothing to cite)."""
    sources = set(answer.sources)
    return bool(sources & set(gold_ids)) and sources <= set(answer.retrieved_ids)


@dataclass
class Scores:
    """Per-question 0/1 outcomes of one system, and their means.

    ``correct``, ``cited``, ``retrieved_gold`` and ``confident_wrong`` are over the knowledge
    questions; ``refused`` over the unanswerable ones; ``valid``, ``in_voice`` (the answer follows
    every rule of :func:`ftrag.evaluate.voice_checks`), ``latency`` and ``prompt_tokens`` over both. Each list is in question order, so two systems' lists pair up (:func:`paired`)."""

    system: str
    knowledge_ids: list[str] = field(default_factory=list)
    unanswerable_ids: list[str] = field(default_factory=list)
    correct: list[float] = field(default_factory=list)
    cited: list[float] = field(default_factory=list)
    retrieved_gold: list[float] = field(default_factory=list)
    confident_wrong: list[float] = field(default_factory=list)
    valid: list[float] = field(default_factory=list)
    in_voice: list[float] = field(default_factory=list)
    refused: list[float] = field(default_factory=list)
    answered_when_answerable: list[float] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    prompt_tokens: list[int] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        return {
            "knowledge_accuracy": evaluate.mean(self.correct),
            "citation_accuracy": evaluate.mean(self.cited),
            "gold_retrieved": evaluate.mean(self.retrieved_gold),
            "confident_wrong": evaluate.mean(self.confident_wrong),
            "schema_validity": evaluate.mean(self.valid),
            "in_voice": evaluate.mean(self.in_voice),
            "refusal_accuracy": evaluate.mean(self.refused),
            "answer_rate_when_retrieved": evaluate.mean(self.answered_when_answerable),
            "median_latency_s": float(statistics.median(self.latency)) if self.latency else float("nan"),
            "prompt_tokens": evaluate.mean(self.prompt_tokens),
        }

    def intervals(self) -> dict[str, tuple[float, float]]:
        """95% Wilson intervals of every rate in :meth:`summary`."""
        return {name: evaluate.wilson_ci(values) for name, values in (
            ("knowledge_accuracy", self.correct), ("citation_accuracy", self.cited),
            ("gold_retrieved", self.retrieved_gold), ("confident_wrong", self.confident_wrong),
            ("schema_validity", self.valid), ("in_voice", self.in_voice), ("refusal_accuracy", self.refused),
            ("answer_rate_when_retrieved", self.answered_when_answerable))}


def score(system: str, knowledge: Sequence[Answer], questions, unanswerable: Sequence[Answer] = (),
          *, after_update: bool = False) -> Scores:
    """Score answers to knowledge questions (gold answers; ``after_update`` uses the updated
    gold where a fact changed) and to unanswerable questions (a hand-off is the right answer).

    ``answered_when_answerable``: on the knowledge questions whose gold article was retrieved, the
    system did not hand off. A system that hands everything off scores 0 here however well it refuses."""
    by_id = {q.id: q for q in questions}
    s = Scores(system)
    for a in knowledge:
        q = by_id[a.question_id]
        accepted = q.gold_answers(after_update)
        gold_ids = q.gold_article_ids(after_update)
        correct = is_correct(a, accepted)
        s.knowledge_ids.append(a.question_id)
        s.correct.append(float(correct))
        s.cited.append(float(cites_gold(a, gold_ids)))
        s.confident_wrong.append(float(not correct and not is_handoff(a)))
        if a.retrieved:
            retrieved = bool(set(a.retrieved_ids) & set(gold_ids))
            s.retrieved_gold.append(float(retrieved))
            if retrieved:
                s.answered_when_answerable.append(float(not is_handoff(a)))
    for a in (*knowledge, *unanswerable):
        s.valid.append(float(a.parsed.valid))
        s.in_voice.append(float(all(evaluate.voice_checks(a.text).values())))
        s.latency.append(a.latency)
        s.prompt_tokens.append(a.reply.prompt_tokens)
    for a in unanswerable:
        s.unanswerable_ids.append(a.question_id)
        s.refused.append(float(is_handoff(a)))
    return s


def paired(a: Scores, b: Scores, metric: str = "correct") -> evaluate.PairedTest:
    """McNemar's test of "A and B differ on ``metric``" over the questions both answered."""
    both = ("knowledge_ids", "unanswerable_ids")
    ids = {"refused": ("unanswerable_ids",), "valid": both, "in_voice": both}.get(metric, ("knowledge_ids",))
    if any(getattr(a, name) != getattr(b, name) for name in ids):
        raise ValueError(f"{a.system} and {b.system} were not asked the same questions in the same order")
    return evaluate.mcnemar(getattr(a, metric), getattr(b, metric))


def answers_table(answers: Sequence[Answer], questions=None, *, limit: int | None = None):
    """A table of answers for display (question, whole reply, sources, correct when gold known):
    a pandas Styler whose reply column wraps instead of being cut, so a reader can check every
    claim made about the replies. ``.data`` is the plain DataFrame."""
    by_id = {q.id: q for q in questions or ()}
    rows = []
    for a in answers[:limit]:
        row = {"id": a.question_id, "question": a.question, "reply": a.parsed.raw,
               "sources": ", ".join(a.sources), "valid JSON": a.parsed.valid}
        if a.question_id in by_id:
            row["gold"] = by_id[a.question_id].answers[0]
            row["correct"] = is_correct(a, by_id[a.question_id].answers)
        rows.append(row)
    return wrapped_table(rows, ["question", "reply"])


#: CSS for a table column of whole sentences: wrapped, never cut.
WRAP = {"white-space": "normal", "word-break": "break-word", "min-width": "18em", "text-align": "left"}


def wrapped_table(rows: Sequence[dict], wrap_columns: Sequence[str]):
    """``rows`` as a pandas Styler whose ``wrap_columns`` wrap instead of being cut (``.data``: the DataFrame)."""
    import pandas as pd

    return pd.DataFrame(rows).style.set_properties(subset=list(wrap_columns), **WRAP).hide(axis="index")


def _ms_per_generated_token(answers: Sequence[Answer], seconds_of) -> float:
    tokens = sum(a.reply.new_tokens for a in answers)
    return 1000 * sum(seconds_of(a.reply) for a in answers) / tokens if tokens else float("nan")


def ms_per_token(answers: Sequence[Answer]) -> float:
    """Generation time per generated token, in milliseconds (amortised over each batch)."""
    return _ms_per_generated_token(answers, lambda reply: reply.seconds)


def constraint_ms_per_token(answers: Sequence[Answer]) -> float:
    """The part of :func:`ms_per_token` spent enforcing the schema (grammar compilation and
    logit masking; 0 for a system that decodes freely)."""
    return _ms_per_generated_token(answers, lambda reply: reply.constraint_seconds)


def looping(text: str, *, min_repeats: int = 4) -> bool:
    """Whether a reply ends in a loop: a tail of 2 to 40 characters repeated ``min_repeats`` times
    back to back (``Stay bright! Stay bright! ...``, ``family.family.family.``)."""
    text = text.rstrip()
    for unit in range(2, 41):
        tail = text[-unit:]
        if len(text) >= unit * min_repeats and text.endswith(tail * min_repeats):
            return True
    return False


def invalid_reply_report(answers: Sequence[Answer], max_new_tokens: int) -> dict[str, float]:
    """Why replies fail the schema: how many are invalid, how many of those ran into the
    ``max_new_tokens`` limit, how many end in a repetition loop, and the median prompt length of
    valid vs invalid replies."""
    invalid = [a for a in answers if not a.parsed.valid]
    valid = [a for a in answers if a.parsed.valid]
    return {
        "replies": len(answers),
        "invalid": len(invalid),
        "invalid_at_token_limit": sum(a.reply.new_tokens >= max_new_tokens for a in invalid),
        "invalid_looping": sum(looping(a.reply.text) for a in invalid),
        "median_prompt_tokens_valid": statistics.median(a.reply.prompt_tokens for a in valid) if valid else float("nan"),
        "median_prompt_tokens_invalid": statistics.median(a.reply.prompt_tokens for a in invalid) if invalid else float("nan"),
    }


# --------------------------------------------------------------------------- the four-way comparison

METRICS = ("knowledge_accuracy", "citation_accuracy", "schema_validity", "in_voice", "refusal_accuracy",
           "answer_rate_when_retrieved", "confident_wrong", "median_latency_s", "prompt_tokens",
           "fresh_accuracy", "update_seconds")
RATE_METRICS = ("knowledge_accuracy", "citation_accuracy", "schema_validity", "in_voice", "refusal_accuracy",
                "answer_rate_when_retrieved", "confident_wrong", "fresh_accuracy")


@dataclass
class Comparison:
    """One row of measured metrics per system, plus 95% Wilson intervals of its rates."""

    rows: dict[str, dict[str, float]]
    intervals: dict[str, dict[str, tuple[float, float]]]
    scores: dict[str, Scores]
    n_knowledge: int
    n_unanswerable: int
    n_changed: int
    answers: dict[str, list[Answer]] = field(default_factory=dict)  # knowledge + unanswerable, per system

    def paired(self, a: str, b: str, metric: str = "correct") -> evaluate.PairedTest:
        """McNemar's test of system ``a`` against ``b`` on one per-question outcome."""
        return paired(self.scores[a], self.scores[b], metric)

    def table(self):
        import pandas as pd

        return pd.DataFrame(self.rows).T[list(METRICS)]

    def display_table(self):
        """The table for reading: human headers, rates with their 95% interval ("0.43 [0.33-0.53]"),
        rounded to what the number of questions supports; "n/a" where a metric does not apply."""
        import math

        import pandas as pd

        from .plots import METRIC_LABELS

        def cell(system: str, metric: str) -> str:
            value = self.rows[system][metric]
            if value is None or (isinstance(value, float) and math.isnan(value)):
                return "n/a"
            if metric in RATE_METRICS:
                lo, hi = self.intervals[system].get(metric, (value, value))
                return f"{value:.2f} [{lo:.2f}-{hi:.2f}]"
            return f"{value:.0f}" if metric == "prompt_tokens" else f"{value:.2f}"

        return pd.DataFrame({METRIC_LABELS.get(m, m): {name: cell(name, m) for name in self.rows} for m in METRICS})

    def flat(self) -> dict[str, float]:
        """``cmp_<system>_<metric>`` keys for :func:`ftrag.results.save`."""
        out: dict[str, float] = {}
        for system, row in self.rows.items():
            for metric, value in row.items():
                out[f"cmp_{system}_{metric}"] = value
            for metric, (lo, hi) in self.intervals[system].items():
                out[f"cmp_{system}_{metric}_ci_low"] = lo
                out[f"cmp_{system}_{metric}_ci_high"] = hi
        out.update(cmp_n_knowledge=self.n_knowledge, cmp_n_unanswerable=self.n_unanswerable,
                   cmp_n_changed=self.n_changed)
        return out


def compare(systems_before: dict[str, System], systems_after: dict[str, System], knowledge, unanswerable,
            all_questions, update_seconds: dict[str, float]) -> Comparison:
    """Run every system on the same questions and score them with the same functions.

    ``systems_after`` are the systems once the knowledge update is out: retrieval systems search
    the updated index, the others are unchanged (their weights do not know about the update).
    ``update_seconds`` is what absorbing the update cost each system (NaN where it cannot).
    """
    k_items = [(q.id, q.question) for q in knowledge]
    u_items = [(q.id, q.question) for q in unanswerable]
    changed = [q for q in knowledge if q.changes_after_update]
    c_items = [(q.id, q.question) for q in changed]
    rows, intervals, all_scores, answers = {}, {}, {}, {}
    for name, system in systems_before.items():
        k_answers = system.ask(k_items, desc=f"{name}: knowledge")
        u_answers = system.ask(u_items, desc=f"{name}: unanswerable")
        fresh = systems_after[name].ask(c_items, desc=f"{name}: after the update")
        s = score(name, k_answers, all_questions, u_answers)
        fresh_scores = score(name, fresh, all_questions, after_update=True)
        row = s.summary()
        row["fresh_accuracy"] = evaluate.mean(fresh_scores.correct)
        row["update_seconds"] = float(update_seconds.get(name, float("nan")))
        rows[name] = row
        intervals[name] = {**s.intervals(), "fresh_accuracy": evaluate.wilson_ci(fresh_scores.correct)}
        all_scores[name] = s
        answers[name] = list(k_answers) + list(u_answers)
    return Comparison(rows, intervals, all_scores, len(knowledge), len(unanswerable), len(changed), answers)

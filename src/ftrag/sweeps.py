"""Settings chosen by measurement, on the dev split only.

Every setting the course picks by looking at results is picked here, from questions of
:attr:`ftrag.data.CourseData.dev`; the labs then report the chosen systems on
:attr:`~ftrag.data.CourseData.test`. The sweeps are too slow for a lab on a laptop, so
``make sweeps`` (``benchmarks/sweeps.py``) runs them and saves ``results/<profile>/sweeps.json``;
the labs plot that file, and a unit test fails when a profile's setting and the saved pick disagree.

Picks are rules written down before looking: the highest dev accuracy, and on a tie the cheaper
setting (fewer chunks, fewer tokens).
"""
from __future__ import annotations

import datetime as dt
import json
import platform
from collections.abc import Sequence
from pathlib import Path

from . import evaluate
from .errors import CourseError
from .paths import REPO_ROOT

TOP_K_CHOICES = (1, 2, 3, 5, 10)
MAX_NEW_TOKENS_CHOICES = (48, 64, 72, 96, 128)
FEW_SHOT_CHOICES = (0, 1, 2, 4)
MAX_ANSWER_CHARS_CHOICES = (160, 240, 320)
#: The RAG instructions tried for knowledge alone (ftrag.prompts.INSTRUCTIONS), the course's schema first.
RAG_INSTRUCTION_CHOICES = ("json", "plain", "quote", "extract", "llamaindex")
#: Hand-off gate thresholds tried in front of the hybrid (cosine similarity of the best chunk; 0 = no gate).
HANDOFF_GATE_CHOICES = (0.0, 0.35, 0.40, 0.45, 0.50, 0.55)


def saved_path(profile_name: str) -> Path:
    """``results/<profile>/sweeps.json``: committed, written by ``make sweeps``."""
    return REPO_ROOT / "results" / profile_name / "sweeps.json"


def load_saved(profile_name: str) -> dict:
    path = saved_path(profile_name)
    if not path.exists():
        raise CourseError(f"No saved sweeps for the {profile_name} profile ({path}). Run `make sweeps` "
                          f"(FTRAG_PROFILE={profile_name}) to measure them on the dev split.")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CourseError(f"{path} is not valid JSON ({exc.msg}); restore it with git checkout or run "
                          "`make sweeps` again.") from None


def load_for(profile) -> tuple[dict, bool]:
    """The profile's saved sweeps and ``True``; or, where none were saved for it yet (the gpu profile
    until someone runs ``make sweeps`` on a GPU), the cpu profile's and ``False``, with a note."""
    if saved_path(profile.name).exists():
        return load_saved(profile.name), True
    print(f"No sweeps saved for the {profile.name} profile yet (run `make sweeps` with FTRAG_PROFILE="
          f"{profile.name}); showing the cpu profile's, which chose the cpu settings only.")
    return load_saved("cpu"), False


def save(profile_name: str, section: str, payload: dict) -> Path:
    """Write one sweep's section into ``results/<profile>/sweeps.json`` (other sections kept)."""
    path = saved_path(profile_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    current = json.loads(path.read_text()) if path.exists() else {}
    current[section] = {**payload, "measured": dt.date.today().isoformat(),
                        "machine": f"{platform.machine()}, {_cores()} cores"}
    path.write_text(json.dumps(current, indent=1, sort_keys=True) + "\n")
    return path


def merge_system_rows(old: Sequence[dict], new: Sequence[dict]) -> list[dict]:
    """``new`` plus the rows of ``old`` for systems ``new`` does not cover: re-running one system's
    sweep (``--systems hybrid``) keeps the other system's saved rows."""
    redone = {r["system"] for r in new}
    return [r for r in old if r["system"] not in redone] + list(new)


def adapter_settings(profile) -> dict:
    """The training settings of the adapter a hybrid sweep ran with: saved beside its rows, so a test
    can tell when the profile's adapter has changed since (the hybrid's picks are then stale)."""
    from .data import FINETUNE_HANDOFF_SHARE

    t = profile.training
    return {"steps": t.max_steps, "handoff_share": FINETUNE_HANDOFF_SHARE, "seed": t.seed}


def _cores() -> int:
    import os

    return os.cpu_count() or 0


# --------------------------------------------------------------------------- retrieval top-k


def top_k_rows(name: str, generator, index, split, *, ks: Sequence[int] = TOP_K_CHOICES,
               questions=None) -> list[dict]:
    """Ask ``split``'s knowledge and unanswerable questions of a retrieval system (``generator`` +
    ``index``) once per top-k; one row of dev metrics per k."""
    from . import rag, systems

    questions = questions or split.knowledge
    return [dev_rows(systems.System(name, generator, rag.Retriever(index, top_k=k)), split, questions, top_k=k)
            for k in ks]


def pick_top_k(rows: Sequence[dict], system: str) -> int:
    """The top-k with the best dev knowledge accuracy for ``system``; on a tie, the smaller k."""
    mine = [r for r in rows if r["system"] == system]
    if not mine:
        raise CourseError(f"The top-k sweep has no rows for {system!r}; run `make sweeps`.")
    if any(r.get("split", "dev") != "dev" for r in mine):
        raise CourseError("Settings are chosen on the dev split only; this sweep holds other rows.")
    return min(mine, key=lambda r: (-r["knowledge_accuracy"], r["top_k"]))["top_k"]


def dev_setup(*, hybrid: bool = False):
    """What a dev-split sweep script starts from: the active profile, the course data and a retriever over
    the help-centre index at the profile's RAG (or, with ``hybrid``, the hybrid's) top-k. Prints what
    the sweep measures on."""
    from . import data, profiles, rag

    profile = profiles.get_profile()
    course = data.load_all()
    rag.configure(profile)
    k = profile.hybrid_top_k if hybrid else profile.retrieval_top_k
    retriever = rag.Retriever(rag.ensure_index(course.kb), top_k=k)
    print(f"{profile.name} profile, {profiles.device_summary(profile)}; dev split: {len(course.dev.knowledge)} "
          f"knowledge + {len(course.dev.unanswerable)} unanswerable questions; {'hybrid' if hybrid else 'RAG'} "
          f"top-{k}", flush=True)
    return profile, course, retriever


def dev_rows(system, split, questions, **fields) -> dict:
    """Ask ``split``'s knowledge and unanswerable questions of one :class:`ftrag.systems.System`;
    its dev metrics as one row, with ``fields`` (the setting swept) in front."""
    from . import systems

    k_answers = system.ask([(q.id, q.question) for q in split.knowledge], desc=f"{system.name}: knowledge")
    u_answers = system.ask([(q.id, q.question) for q in split.unanswerable], desc=f"{system.name}: unanswerable")
    summary = systems.score(system.name, k_answers, questions, u_answers).summary()
    at_limit = [a.reply.new_tokens >= system.generator.max_new_tokens for a in (*k_answers, *u_answers)]
    return {"system": system.name, **fields, "split": split.name, "n_knowledge": len(k_answers),
            "n_unanswerable": len(u_answers), "replies_at_token_limit": evaluate.mean(at_limit), **summary}


def _dev_only(rows: Sequence[dict], what: str, command: str = "make sweeps-prompt") -> None:
    if not rows:
        raise CourseError(f"The {what} sweep is empty; run `{command}`.")
    if any(r.get("split", "dev") != "dev" for r in rows):
        raise CourseError("Settings are chosen on the dev split only; this sweep holds other rows.")


def pick_few_shot(rows: Sequence[dict], *, min_answer_rate: float = 0.5) -> int:
    """How many worked examples the few-shot prompt shows. Few-shot prompting is tried for what
    fine-tuning is used for here, the reply's form, so: the highest dev schema validity among the
    prompts that still answer at least ``min_answer_rate`` of the questions whose article was
    retrieved (as :func:`pick_training`); on a tie, fewer examples (a shorter prompt)."""
    _dev_only(rows, "few-shot")
    answering = [r for r in rows if r["answer_rate_when_retrieved"] >= min_answer_rate] or list(rows)
    return min(answering, key=lambda r: (-r["schema_validity"], r["few_shot_k"]))["few_shot_k"]


def pick_rag_instruction(rows: Sequence[dict]) -> str:
    """The instruction of the knowledge-first RAG system: the best dev knowledge accuracy; on a tie,
    the earlier of :data:`RAG_INSTRUCTION_CHOICES` (the course's own prompt first)."""
    _dev_only(rows, "RAG instruction")
    order = {name: i for i, name in enumerate(RAG_INSTRUCTION_CHOICES)}
    return min(rows, key=lambda r: (-r["knowledge_accuracy"], order.get(r["instruction"], len(order))))["instruction"]


def pick_max_answer_chars(rows: Sequence[dict], *, min_validity: float = 0.95) -> int:
    """The answer's length cap under constrained decoding: the best dev knowledge accuracy among the
    caps whose replies are schema-valid at least ``min_validity`` of the time (a reply cut by
    ``max_new_tokens`` is not), on a tie the shorter cap; when none is, the most valid."""
    _dev_only(rows, "constrained decoding")
    valid = [r for r in rows if r["schema_validity"] >= min_validity]
    if valid:
        return min(valid, key=lambda r: (-r["knowledge_accuracy"], r["max_answer_chars"]))["max_answer_chars"]
    return min(rows, key=lambda r: (-r["schema_validity"], r["max_answer_chars"]))["max_answer_chars"]


# --------------------------------------------------------------------------- max_new_tokens


def truncated_reply(tokenizer, text: str, new_tokens: int, budget: int) -> tuple[str, int]:
    """What greedy decoding with a smaller ``budget`` would have written: the first ``budget``
    tokens of a reply generated with a larger one (greedy decoding does not look ahead)."""
    if new_tokens <= budget:
        return text, new_tokens
    ids = tokenizer(text, add_special_tokens=False)["input_ids"][:budget]
    return tokenizer.decode(ids), budget


def max_new_tokens_rows(name: str, answers: Sequence, tokenizer, generated_with: int,
                        budgets: Sequence[int] = MAX_NEW_TOKENS_CHOICES) -> list[dict]:
    """Schema validity and share of replies cut at the limit for each budget, from replies generated
    once with ``generated_with`` tokens (each smaller budget is a truncation of them)."""
    rows = []
    for budget in budgets:
        if budget > generated_with:
            raise CourseError(f"budget {budget} exceeds the {generated_with} tokens the replies were generated with")
        cut = [truncated_reply(tokenizer, a.reply.text, a.reply.new_tokens, budget) for a in answers]
        valid = [float(evaluate.parse_reply(text).valid) for text, _ in cut]
        at_limit = [float(a.reply.new_tokens >= budget) for a in answers]
        rows.append({"system": name, "max_new_tokens": budget, "schema_validity": evaluate.mean(valid),
                     "replies_at_token_limit": evaluate.mean(at_limit), "n": len(answers)})
    return rows


def pick_max_new_tokens(rows: Sequence[dict], *, tolerance: float = 0.0) -> int:
    """The smallest budget whose schema validity, for every system swept, is within ``tolerance`` of
    that system's best: more tokens only cost time once no reply is cut any more."""
    systems_swept = {r["system"] for r in rows}
    best = {s: max(r["schema_validity"] for r in rows if r["system"] == s) for s in systems_swept}
    for budget in sorted({r["max_new_tokens"] for r in rows}):
        at = {r["system"]: r["schema_validity"] for r in rows if r["max_new_tokens"] == budget}
        if all(at.get(s, -1) >= best[s] - tolerance for s in systems_swept):
            return budget
    raise CourseError("The max_new_tokens sweep is empty; run `make sweeps`.")


# --------------------------------------------------------------------------- behaviour training


#: The seeds ``make bench-handoff`` trains each setting with: one run is one draw (see
#: :mod:`ftrag.seed_variance`), so a setting is judged by its mean over these.
TRAINING_SEEDS = (0, 1, 2)
#: The hybrid's dev rates a training run is judged by, averaged over its seeds.
TRAINING_METRICS = ("refusal_accuracy", "answer_rate_when_retrieved", "knowledge_accuracy", "schema_validity")


def training_means(rows: Sequence[dict]) -> list[dict]:
    """One row per training setting ``(steps, handoff_share)`` of ``benchmarks/handoff_decision.py``'s
    per-seed rows: each of :data:`TRAINING_METRICS` averaged over the seeds, with the lowest and
    highest seed (``<metric>_min``, ``<metric>_max``) and the seeds themselves. Every setting must
    have been trained with the same seeds, measured on the dev split."""
    _dev_only(rows, "training", "make bench-handoff")
    groups: dict[tuple[int, float], list[dict]] = {}
    for r in rows:
        groups.setdefault((int(r["steps"]), float(r["handoff_share"])), []).append(r)
    seed_sets = {key: sorted(r["seed"] for r in group) for key, group in groups.items()}
    if len({tuple(s) for s in seed_sets.values()}) > 1 or any(len(set(s)) != len(s) for s in seed_sets.values()):
        raise CourseError(f"Each training setting must be measured once with the same seeds; got {seed_sets}. "
                          "Run `make bench-handoff` again.")
    means = []
    for (steps, share), group in sorted(groups.items()):
        row = {"steps": steps, "handoff_share": share, "seeds": seed_sets[(steps, share)],
               "handoff_chats": group[0]["handoff_chats"], "train_chats": group[0]["train_chats"]}
        for metric in TRAINING_METRICS:
            values = [g[metric] for g in group]
            row[metric] = evaluate.mean(values)
            row[f"{metric}_min"], row[f"{metric}_max"] = min(values), max(values)
        means.append(row)
    return means


def pick_training(rows: Sequence[dict], *, min_answer_rate: float = 0.5) -> tuple[int, float]:
    """``(steps, handoff_share)`` of the behaviour adapter, judged as the hybrid on the dev split and
    averaged over the seeds each setting was trained with (:func:`training_means`): among the
    settings whose replies still answer at least ``min_answer_rate`` of the dev questions whose
    article was retrieved, the one that hands off most often on the unanswerable ones; on a tie,
    fewer steps. When none answers that often, the constraint comes first: the setting that answers
    most (a "hand everything off" adapter is never the pick). Never measured on the test split."""
    means = training_means(rows)
    answering = [r for r in means if r["answer_rate_when_retrieved"] >= min_answer_rate]
    if answering:
        best = min(answering, key=lambda r: (-round(r["refusal_accuracy"], 9), r["steps"], -r["handoff_share"]))
    else:
        best = min(means, key=lambda r: (-r["answer_rate_when_retrieved"], -r["refusal_accuracy"], r["steps"]))
    return best["steps"], best["handoff_share"]


def training_headline(rows: Sequence[dict], *, min_answer_rate: float = 0.5) -> dict[str, object]:
    """The training sweep's figures a page quotes (glued as ``training_*``): how many settings and
    seeds, how many settings answered too rarely to qualify, and the pick's mean, lowest and highest
    seed for the hand-off rate on unanswerable questions and the answer rate where the article was
    retrieved (dev split)."""
    means = training_means(rows)
    steps, share = pick_training(rows, min_answer_rate=min_answer_rate)
    pick = next(m for m in means if (m["steps"], m["handoff_share"]) == (steps, share))
    out: dict[str, object] = {
        "training_settings_n": len(means), "training_seeds_n": len(pick["seeds"]),
        "training_excluded_n": sum(m["answer_rate_when_retrieved"] < min_answer_rate for m in means),
        "training_pick_steps": steps, "training_pick_share": share, "training_pick_handoff_chats": pick["handoff_chats"],
    }
    for metric, key in (("refusal_accuracy", "refusal"), ("answer_rate_when_retrieved", "answers")):
        for suffix in ("", "_min", "_max"):
            out[f"training_pick_{key}{suffix}"] = pick[f"{metric}{suffix}"]
    others = sorted((m for m in means if m is not pick and m["answer_rate_when_retrieved"] >= min_answer_rate),
                    key=lambda m: -m["refusal_accuracy"])
    if others:   # the qualifying setting that handed off most after the pick
        out.update({"training_runner_up_steps": others[0]["steps"], "training_runner_up_share": others[0]["handoff_share"],
                    "training_runner_up_refusal": others[0]["refusal_accuracy"],
                    "training_runner_up_answers": others[0]["answer_rate_when_retrieved"]})
    return out


# --------------------------------------------------------------------------- hand-off gate


def pick_handoff_gate(rows: Sequence[dict]) -> float:
    """The hand-off gate in front of the hybrid (``System(handoff_below=...)``): the threshold with the
    best balance of the two ways a hand-off decision can fail, the mean of the hand-off rate on the
    unanswerable dev questions and the answer rate on the dev questions whose article was retrieved (a
    missed hand-off and a needless one count the same); on a tie the lower threshold, which sends more
    questions to the model. 0 (no gate) is a candidate, so a gate that does not help is not picked."""
    _dev_only(rows, "hand-off gate", "make sweeps-gate")
    return min(rows, key=lambda r: (-round(gate_balance(r), 9), r["handoff_below"]))["handoff_below"]


def gate_balance(row: dict) -> float:
    """What :func:`pick_handoff_gate` maximises for one row."""
    return (row["refusal_accuracy"] + row["answer_rate_when_retrieved"]) / 2


def gate_description(handoff_gate: float) -> str:
    """How lab 3's discussion names a profile's gate; a profile without one (0) says its row repeats the hybrid's."""
    if handoff_gate:
        return f"hand off below {handoff_gate:.2f}"
    return "none on this profile, which has no dev sweep to choose one, so this row repeats the hybrid's"


def gate_headline(rows: Sequence[dict]) -> dict[str, float]:
    """The gate sweep's dev figures a page quotes (glued as ``gate_dev_*``): the picked threshold, and the
    hybrid's hand-off and answer rates with no gate and with the picked one."""
    picked = pick_handoff_gate(rows)
    by_threshold = {r["handoff_below"]: r for r in rows}
    if 0.0 not in by_threshold:
        raise CourseError("The hand-off gate sweep has no row without a gate; run `make sweeps-gate`.")
    without, with_gate = by_threshold[0.0], by_threshold[picked]
    return {"gate_dev_threshold": picked,
            "gate_dev_refusal_without": without["refusal_accuracy"], "gate_dev_refusal_with": with_gate["refusal_accuracy"],
            "gate_dev_answers_without": without["answer_rate_when_retrieved"],
            "gate_dev_answers_with": with_gate["answer_rate_when_retrieved"]}


# --------------------------------------------------------------------------- chunking


def pick_chunking(rows: Sequence[tuple]):
    """The chunking with the best dev MRR among the sentence-aware ones (the deliberately bad token
    split is there to be shown, not chosen); on a tie, fewer chunks. ``rows`` are
    :func:`ftrag.rag.chunking_sweep`'s ``(IndexInfo, RetrievalReport)`` pairs, measured on dev."""
    candidates = [(info, report) for info, report in rows if info.chunking.splitter == "sentence"]
    if not candidates:
        raise CourseError("The chunking sweep holds no sentence-aware chunking to choose from.")
    return min(candidates, key=lambda row: (-round(row[1].mrr, 9), row[0].n_chunks))[0].chunking

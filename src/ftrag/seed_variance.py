"""How much one QLoRA run varies: the behaviour adapter trained again and again on the same data with
the same settings, changing only the random seed, and each adapter evaluated as the hybrid on the
test split. ``benchmarks/seed_variance.py`` (``make bench-seeds``) measures it and saves
``results/<profile>/seed_variance.json``; the hybrid chapter reads that file.

The seed (:attr:`ftrag.profiles.TrainingSettings.seed`) sets LoRA's random initial ``A`` matrices
and the order in which the Trainer draws the training chats. Nothing else changes between runs, so
the spread between seeds is the part of a result that one training run cannot tell you.

Each seed's adapter is also judged behind the profile's hand-off gate (``gated_*`` figures: the same
replies, with the questions whose best chunk scores below the gate handed off unasked), so the
chapter can say whether the gate's effect holds over training runs or belongs to one adapter.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import platform
from collections.abc import Sequence
from pathlib import Path

from .errors import CourseError
from .paths import REPO_ROOT
from .profiles import TrainingSettings, cpu_name

#: The seed of the labs' own adapter: the default of ``TrainingSettings.seed``.
LABS_SEED = TrainingSettings().seed
#: The seeds ``make bench-seeds`` trains by default, the labs' own first.
DEFAULT_SEEDS = (LABS_SEED, 1, 2, 3, 4)
#: The hybrid's rates the benchmark records, each with its 95% Wilson interval and its count.
METRICS = ("refusal_accuracy", "answer_rate_when_retrieved", "knowledge_accuracy", "schema_validity", "in_voice")
LABELS = {"refusal_accuracy": "hands off when it should (unanswerable)",
          "answer_rate_when_retrieved": "answers when its article was retrieved",
          "knowledge_accuracy": "knowledge accuracy",
          "schema_validity": "schema validity",
          "in_voice": "in Lumio's voice"}


def results_path(profile_name: str) -> Path:
    """``results/<profile>/seed_variance.json``: committed, written by ``make bench-seeds``."""
    return REPO_ROOT / "results" / profile_name / "seed_variance.json"


def _rates(scores, prefix: str = "") -> dict:
    summary, intervals = scores.summary(), scores.intervals()
    counts = {"refusal_accuracy": len(scores.refused), "answer_rate_when_retrieved": len(scores.answered_when_answerable),
              "knowledge_accuracy": len(scores.correct), "schema_validity": len(scores.valid),
              "in_voice": len(scores.in_voice)}
    row = {}
    for metric in METRICS:
        row[f"{prefix}{metric}"] = float(summary[metric])
        row[f"{prefix}{metric}_ci"] = [float(x) for x in intervals[metric]]
        row[f"{prefix}{metric}_n"] = counts[metric]
    return row


def run_row(seed: int, scores, train_result, gated_scores=None) -> dict:
    """One seed's record: the hybrid's :data:`METRICS` from a :class:`ftrag.systems.Scores`, with
    intervals and counts, what the training run measured, and (``gated_scores``) the same metrics
    behind the hand-off gate as ``gated_<metric>``."""
    row = {"seed": int(seed), "final_val_loss": float(train_result.val_losses[-1][1]) if train_result.val_losses else None,
           "train_seconds": float(train_result.seconds), "cached": bool(train_result.cached), **_rates(scores)}
    if gated_scores is not None:
        row.update(_rates(gated_scores, "gated_"))
    return row


def has_gate(data: dict) -> bool:
    """Whether every run was also judged behind the hand-off gate (files written before the gate lack it)."""
    return bool(data.get("handoff_gate")) and all("gated_refusal_accuracy" in run for run in data["runs"])


def save(profile_name: str, rows: Sequence[dict], *, split: str, top_k: int, steps: int,
         path: Path | None = None, handoff_gate: float = 0.0) -> Path:
    path = Path(path or results_path(profile_name))
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"profile": profile_name, "split": split, "hybrid_top_k": top_k, "train_steps": steps,
               "handoff_gate": handoff_gate,
               "measured": dt.date.today().isoformat(),
               "machine": f"{platform.machine()}, {os.cpu_count()} cores, {cpu_name()}", "runs": list(rows)}
    path.write_text(json.dumps(payload, indent=1) + "\n")
    return path


def load(profile_name: str = "cpu", path: Path | None = None) -> dict:
    """The saved runs, checked: a missing, unreadable or incomplete file raises :class:`CourseError`
    with the fix."""
    path = Path(path or results_path(profile_name))
    fix = f"run `make bench-seeds` (FTRAG_PROFILE={profile_name}, about 25 minutes on 2 cores) or restore it with git checkout"
    if not path.exists():
        raise CourseError(f"No seed-variance results in {path}; {fix}.")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CourseError(f"{path} is not valid JSON ({exc.msg}); {fix}.") from None
    runs = data.get("runs") if isinstance(data, dict) else None
    if not runs or not isinstance(runs, list):
        raise CourseError(f"{path} holds no runs; {fix}.")
    for run in runs:
        missing = [k for k in ("seed", *METRICS, *(f"{m}_ci" for m in METRICS)) if k not in run]
        if missing:
            raise CourseError(f"{path}: the run {run.get('seed', '?')} lacks {', '.join(missing)}; {fix}.")
    seeds = [run["seed"] for run in runs]
    if len(set(seeds)) != len(seeds):
        raise CourseError(f"{path} lists a seed twice ({seeds}); {fix}.")
    return data


def spread(data: dict, metric: str) -> tuple[float, float]:
    """The lowest and highest value of ``metric`` over the seeds."""
    values = [run[metric] for run in data["runs"]]
    return min(values), max(values)


def disjoint_pairs(data: dict, metric: str) -> int:
    """How many pairs of seeds have 95% intervals of ``metric`` that do not overlap: seeds whose
    difference the evaluation's own noise cannot explain."""
    runs = data["runs"]
    return sum(1 for i, a in enumerate(runs) for b in runs[i + 1:]
               if a[f"{metric}_ci"][1] < b[f"{metric}_ci"][0] or b[f"{metric}_ci"][1] < a[f"{metric}_ci"][0])


def headline(data: dict) -> dict:
    """The figures a page quotes (glue names ``seeds_*``)."""
    out = {"seeds_n": len(data["runs"]), "seeds_date": data["measured"], "seeds_machine": data["machine"],
           "seeds_steps": data["train_steps"]}
    for metric in METRICS:
        low, high = spread(data, metric)
        out[f"seeds_{metric}_min"], out[f"seeds_{metric}_max"] = low, high
        out[f"seeds_{metric}_disjoint"] = disjoint_pairs(data, metric)
        out[f"seeds_{metric}_n"] = data["runs"][0][f"{metric}_n"]
        labs = [run for run in data["runs"] if run["seed"] == LABS_SEED]
        others = sorted(run[metric] for run in data["runs"] if run["seed"] != LABS_SEED)
        if labs and others:
            out[f"seeds_labs_{metric}"] = labs[0][metric]
            out[f"seeds_others_{metric}_min"], out[f"seeds_others_{metric}_max"] = others[0], others[-1]
    if has_gate(data):
        runs = data["runs"]
        out["seeds_gate"] = data["handoff_gate"]
        for metric in ("refusal_accuracy", "answer_rate_when_retrieved", "knowledge_accuracy"):
            out[f"seeds_gated_{metric}_min"], out[f"seeds_gated_{metric}_max"] = spread(data, f"gated_{metric}")
        gains = [r["gated_refusal_accuracy"] - r["refusal_accuracy"] for r in runs]
        out["seeds_gate_raised_refusal"] = sum(gain > 0 for gain in gains)
        out["seeds_gate_kept_refusal"] = sum(gain == 0 for gain in gains)
        out["seeds_gate_refusal_gain_min"], out["seeds_gate_refusal_gain_max"] = min(gains), max(gains)
        out["seeds_gate_both_targets"] = sum(r["gated_refusal_accuracy"] >= 0.6 and r["gated_answer_rate_when_retrieved"] >= 0.5
                                             for r in runs)
    return out

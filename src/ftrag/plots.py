"""Every figure the book shows. Functions return a matplotlib Figure and never call ``show``;
figure titles say what is measured and axis labels carry units."""
from __future__ import annotations

from collections.abc import Sequence


def _fig(width: float = 6.4, height: float = 3.6):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height), dpi=110)
    ax.grid(alpha=0.3)
    return fig, ax


def rag_hit_at_k(reports: Sequence, labels: Sequence[str] | None = None, *, highlight: str | None = None):
    """hit@k curves (k = 1..10) for one or more retrieval reports."""
    fig, ax = _fig()
    for i, rep in enumerate(reports):
        label = labels[i] if labels else rep.chunking_label
        ks = sorted(rep.hit_at)
        style = {"linewidth": 3} if label == highlight else {"linewidth": 1.5, "alpha": 0.85}
        ax.plot(ks, [rep.hit_at[k] for k in ks], marker="o", label=f"{label} (MRR {rep.mrr:.2f})", **style)
    ax.set(xlabel="k (chunks retrieved)", ylabel="hit@k (gold article in top k)", ylim=(0, 1.02),
           title="Retrieval quality on the knowledge questions")
    ax.set_xticks(range(1, 11))
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def rag_chunking(rows: Sequence, *, chosen: str | None = None):
    """hit@1, hit@5 and MRR per chunking setting, as grouped bars."""
    import numpy as np

    fig, ax = _fig(7.2, 3.8)
    labels = [info.chunking.label for info, _ in rows]
    metrics = {"hit@1": [r.hit_at[1] for _, r in rows], "hit@5": [r.hit_at[5] for _, r in rows],
               "MRR": [r.mrr for _, r in rows]}
    x = np.arange(len(rows))
    for j, (name, values) in enumerate(metrics.items()):
        bars = ax.bar(x + (j - 1) * 0.26, values, 0.26, label=name)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(x, [f"{lab}\n{info.n_chunks} chunks" + (" (chosen)" if lab == chosen else "")
                      for lab, (info, _) in zip(labels, rows)], fontsize=8)
    ax.set(ylabel="score", ylim=(0, 1.1), title="Chunking sweep: sentence splitter sizes vs a bad split")
    ax.legend(fontsize=8, ncol=3, loc="upper left")
    fig.tight_layout()
    return fig


def top_k_sweep(rows: Sequence[dict]):
    """Dev-split accuracy (with 95% Wilson intervals), prompt tokens and latency against top-k,
    one line per system (rows from :func:`ftrag.sweeps.top_k_rows`)."""
    import matplotlib.pyplot as plt

    from .evaluate import wilson_interval

    fig, axes = plt.subplots(1, 3, figsize=(9.0, 3.1), dpi=110)
    for name in dict.fromkeys(r["system"] for r in rows):
        mine = sorted((r for r in rows if r["system"] == name), key=lambda r: r["top_k"])
        ks = [r["top_k"] for r in mine]
        acc = [r["knowledge_accuracy"] for r in mine]
        bounds = [wilson_interval(round(a * r["n_knowledge"]), r["n_knowledge"]) for a, r in zip(acc, mine)]
        err = [[a - lo for a, (lo, _) in zip(acc, bounds)], [hi - a for a, (_, hi) in zip(acc, bounds)]]
        color = SYSTEM_COLORS.get(name)
        axes[0].errorbar(ks, acc, yerr=err, marker="o", capsize=3, label=name, color=color)
        axes[1].plot(ks, [r["prompt_tokens"] for r in mine], marker="o", color=color)
        axes[2].plot(ks, [r["median_latency_s"] for r in mine], marker="o", color=color)
    for ax, title in zip(axes, ("knowledge accuracy (dev)", "prompt tokens / question", "seconds / answer")):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("top-k (chunks in the prompt)")
        ax.set_xticks(sorted({r["top_k"] for r in rows}))
        ax.grid(alpha=0.3)
    axes[0].set_ylim(0, 1)
    axes[0].legend(fontsize=8)
    fig.suptitle("More context is not free: the top-k sweep on the dev split", fontsize=11)
    fig.tight_layout()
    return fig


def setup_timings(seconds: dict[str, float]):
    """Horizontal bars of the set-up check's timings (lab 0)."""
    fig, ax = _fig(6.4, 2.4)
    bars = ax.barh(list(seconds), list(seconds.values()), color="#4c72b0")
    ax.bar_label(bars, fmt="%.2f s", fontsize=8)
    ax.invert_yaxis()
    ax.set(xlabel="seconds", title="Set-up check timings on this machine")
    fig.tight_layout()
    return fig


METRIC_LABELS = {
    "knowledge_accuracy": "knowledge accuracy", "citation_accuracy": "citation accuracy",
    "schema_validity": "schema validity", "in_voice": "in Lumio's voice", "refusal_accuracy": "refusal accuracy",
    "answer_rate_when_retrieved": "answers when retrieved", "confident_wrong": "confident & wrong",
    "fresh_accuracy": "fresh accuracy", "median_latency_s": "median latency (s)",
    "prompt_tokens": "prompt tokens", "update_seconds": "seconds to absorb the update",
    "gold_retrieved": "gold article retrieved",
}
SYSTEM_COLORS = {"base": "#8c8c8c", "rag": "#4c72b0", "extractive_rag": "#937860", "fewshot_rag": "#8172b3",
                 "constrained_rag": "#64b5cd", "gated_constrained_rag": "#2a7f9e",
                 "finetuned": "#dd8452", "hybrid": "#55a868", "gated_hybrid": "#2f6b3a"}


def comparison_intervals(comparison, *, title: str | None = None):
    """One panel per rate metric, one row per system: the measured share as a dot and its 95% Wilson
    interval as a line, so overlapping intervals are seen at a glance (eight or nine systems as grouped
    bars were a thicket). A metric that does not apply to a system (the answer rate of a system without
    retrieval) is marked "n/a"."""
    import math

    import matplotlib.pyplot as plt

    from .systems import RATE_METRICS

    names = list(comparison.rows)
    columns = 4
    panels = math.ceil(len(RATE_METRICS) / columns)
    fig, axes = plt.subplots(panels, columns, figsize=(9.6, 1.2 + 0.26 * len(names) * panels), dpi=110,
                             sharey=True, squeeze=False)
    for ax, metric in zip(axes.flat, RATE_METRICS):
        for row, name in enumerate(names):
            value = comparison.rows[name][metric]
            if value != value:  # NaN: does not apply
                ax.text(0.5, row, "n/a", ha="center", va="center", fontsize=7, color="#8c8c8c")
                continue
            lo, hi = comparison.intervals[name].get(metric, (value, value))
            color = SYSTEM_COLORS.get(name, "#4c72b0")
            ax.plot([lo, hi], [row, row], color=color, linewidth=2, alpha=0.6, solid_capstyle="butt")
            ax.plot([value], [row], "o", color=color, markersize=5)
        lower_better = " (lower is better)" if metric == "confident_wrong" else ""
        ax.set(xlim=(-0.03, 1.03), title=METRIC_LABELS.get(metric, metric) + lower_better)
        ax.title.set_fontsize(9)
        ax.set_xticks([0, 0.5, 1])
        ax.tick_params(labelsize=8)
        ax.grid(axis="x", alpha=0.3)
    for ax in axes.flat[len(RATE_METRICS):]:
        ax.set_visible(False)
    axes[0][0].set_yticks(range(len(names)), names)
    axes[0][0].invert_yaxis()  # the table's order, top to bottom
    fig.suptitle(title or "Every system on the test split: share of questions, with its 95% Wilson interval",
                 fontsize=10)
    fig.tight_layout()
    return fig


def qlora_memory(rows: Sequence[dict]):
    """Weight memory in MB: measured bars next to the ``n_params * bits / 8`` formula bars
    (rows from :func:`ftrag.costs.memory_comparison`)."""
    fig, ax = _fig(7.2, 3.6)
    colors = {"formula": "#c8c8c8", "measured": "#4c72b0"}
    labels = [f"{r['weights']}\n({r['kind']})" for r in rows]
    bars = ax.barh(range(len(rows)), [r["MB"] for r in rows],
                   color=[colors.get(r["kind"], "#dd8452") for r in rows])
    ax.bar_label(bars, fmt="%.0f MB", fontsize=8, padding=3)
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, max(r["MB"] for r in rows) * 1.25)
    ax.set(xlabel="weight memory (MB)", title="Weight memory: formula (grey) vs measured (blue)")
    fig.tight_layout()
    return fig


def qlora_loss_curve(run):
    """Training loss per step and validation loss every ``eval_every`` steps of a QLoRA run
    (a :class:`ftrag.training.TrainResult`)."""
    fig, ax = _fig()
    if run.train_losses:
        steps, losses = zip(*run.train_losses)
        ax.plot(steps, losses, label="training loss (one batch)", alpha=0.8)
    if run.val_losses:
        steps, losses = zip(*run.val_losses)
        ax.plot(steps, losses, marker="o", linewidth=2, label="validation loss")
    ax.set(xlabel="optimizer step", ylabel="cross-entropy on reply tokens", ylim=(0, None),
           title=f"QLoRA training: {run.steps} steps, batch {run.settings.get('batch_size')}, "
                 f"lr {run.settings.get('learning_rate'):g}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


#: Colours for training settings (steps, hand-off share), in sorted order.
SETTING_COLORS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c")


def training_sweep(rows: Sequence[dict], *, picked: tuple[int, float] | None = None):
    """The hybrid's hand-off rate on the dev split's unanswerable questions against its rate of not
    answering where the question's article was retrieved: a small dot per training run (one seed),
    a large one per setting at its mean over the seeds (rows from ``benchmarks/handoff_decision.py``).
    On the diagonal a model hands off as often whether or not the context holds the answer: it has
    learned how often, not when."""
    from .sweeps import training_means

    fig, ax = _fig(5.6, 4.4)
    ax.plot([0, 1], [0, 1], color="#999999", linestyle="--", linewidth=1, label="no discrimination")
    ax.axvspan(0.5, 1.0, color="#dd8452", alpha=0.08, label="answers fewer than half (excluded)")
    colours = dict(zip(sorted({(r["steps"], r["handoff_share"]) for r in rows}), SETTING_COLORS))
    for r in rows:
        ax.scatter(1 - r["answer_rate_when_retrieved"], r["refusal_accuracy"], s=18, alpha=0.7,
                   color=colours[r["steps"], r["handoff_share"]], zorder=2)
    for m in training_means(rows):
        key = (m["steps"], m["handoff_share"])
        is_pick = picked is not None and key == tuple(picked)
        ax.scatter(1 - m["answer_rate_when_retrieved"], m["refusal_accuracy"], s=110 if is_pick else 70,
                   color=colours[key], edgecolor="black", linewidth=1.5 if is_pick else 0.5, marker="D", zorder=3,
                   label=f"{m['steps']} steps, share {m['handoff_share']:g}: mean" + (" (picked)" if is_pick else ""))
    ax.set(xlim=(-0.02, 1), ylim=(-0.02, 1.05), xlabel="no answer where the article was retrieved (dev)",
           ylabel="hand-off on unanswerable questions (dev)",
           title="Behaviour adapter as the hybrid: one dot per seed")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- retrieval at scale


def retrieval_scale(results: dict):
    """Latency p95 (log scale) and index memory against collection size for exact search and for the
    IVF setting that reaches the recall target, from ``ftrag.retrieval_scale.load()``."""
    import matplotlib.pyplot as plt

    from .retrieval_scale import chosen_ann

    rows = results["rows"]
    sizes = sorted({r["n"] for r in rows})
    exact = [next(r for r in rows if r["n"] == n and r["nprobe"] is None) for n in sizes]
    ann = [chosen_ann(rows, n, results["recall_target"]) for n in sizes]
    ann_sizes = [n for n, r in zip(sizes, ann) if r]
    ann = [r for r in ann if r]
    fig, (left, right) = plt.subplots(1, 2, figsize=(8.6, 3.6), dpi=110)
    for ax in (left, right):
        ax.grid(alpha=0.3, which="both")
        ax.set_xscale("log")
        ax.set_xlabel("chunks in the collection")
    left.plot(sizes, [r["p95_ms"] for r in exact], marker="o", color="#8c8c8c", label="exact (every vector)")
    left.plot(ann_sizes, [r["p95_ms"] for r in ann], marker="o", color="#4c72b0",
              label=f"IVF, recall@10 >= {results['recall_target']}")
    for n, r in zip(ann_sizes, ann):
        left.annotate(f"nprobe {r['nprobe']}\nrecall {r['recall_at_10']:.3f}", (n, r["p95_ms"]), fontsize=7,
                      textcoords="offset points", xytext=(0, 8), ha="center")
    left.set(yscale="log", ylabel="p95 latency per question (ms)", title="Search time")
    left.legend(fontsize=8, loc="upper left")
    right.plot(sizes, [r["memory_mb"] for r in exact], marker="o", color="#8c8c8c", label="exact")
    right.plot(ann_sizes, [r["memory_mb"] for r in ann], marker="s", linestyle="--", color="#4c72b0", label="IVF")
    right.set(yscale="log", ylabel="memory the index added (MB)", title="Memory")
    right.legend(fontsize=8, loc="upper left")
    fig.suptitle(f"{results['dimension']}-d vectors, one query at a time on one thread ({results['machine']}, "
                 f"{results['date']})", fontsize=9)
    fig.tight_layout()
    return fig


def seed_variance(results: dict):
    """Per training seed, the hybrid's hand-off and answer rates with their 95% Wilson intervals,
    from :func:`ftrag.seed_variance.load`; where the file has them, the same adapter behind the
    hand-off gate beside each point."""
    import matplotlib.pyplot as plt

    from .seed_variance import LABELS, LABS_SEED, has_gate

    runs = sorted(results["runs"], key=lambda r: r["seed"])
    series = [("", "hybrid", SYSTEM_COLORS["hybrid"], "o")]
    if has_gate(results):
        series.append(("gated_", f"hybrid behind the gate ({results['handoff_gate']:.2f})", SYSTEM_COLORS["gated_hybrid"], "s"))
    offsets = [0.0] if len(series) == 1 else [-0.12, 0.12]
    fig, axes = plt.subplots(1, 2, figsize=(8.6, 3.4), dpi=110, sharey=True)
    for ax, metric in zip(axes, ("refusal_accuracy", "answer_rate_when_retrieved")):
        for (prefix, label, color, marker), offset in zip(series, offsets):
            xs = [x + offset for x in range(len(runs))]
            values = [run[f"{prefix}{metric}"] for run in runs]
            lows = [v - run[f"{prefix}{metric}_ci"][0] for v, run in zip(values, runs)]
            highs = [run[f"{prefix}{metric}_ci"][1] - v for v, run in zip(values, runs)]
            ax.errorbar(xs, values, yerr=[lows, highs], fmt=marker, capsize=3, color=color, label=label)
        ax.set_xticks(range(len(runs)), [f"seed {r['seed']}" + (" (labs)" if r["seed"] == LABS_SEED else "")
                                         for r in runs], fontsize=8)
        ax.set_title(f"{LABELS[metric]}\n(n = {runs[0][f'{metric}_n']})", fontsize=9)
        ax.set_ylim(-0.04, 1.05)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("share of test questions")
    if len(series) > 1:
        axes[1].legend(fontsize=8, loc="lower left")
    fig.suptitle(f"The hybrid, one behaviour adapter per training seed ({results['split']} split, "
                 f"{results['measured']})", fontsize=10)
    fig.tight_layout()
    return fig

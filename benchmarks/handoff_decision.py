"""Benchmark: does the behaviour adapter learn *when* to hand off, or only *how often*?

    python benchmarks/handoff_decision.py            # 4 settings x 3 seeds, about 50 minutes on 2 cores
    python benchmarks/handoff_decision.py --runs 24:0.5 96:0.5 --seeds 0 1

Each run trains the profile's behaviour adapter (``training.ensure_adapter``, so a run already in
``.cache/adapters`` is read back, the labs' own adapter included) for ``STEPS`` optimizer steps on
the behaviour data built with ``data/scripts/make_finetune.py --handoff-share SHARE``, once per
training seed, because one run is one draw (``make bench-seeds`` shows how far apart two seeds
land). Each adapter is then measured two ways:

* as the **hybrid on the dev split** (the profile's retriever and top-k, 54 knowledge and 10
  unanswerable questions): the hand-off rate on the unanswerable questions, the answer rate where
  the question's article was retrieved, knowledge accuracy and schema validity. The pick reads
  these, averaged over the seeds;
* on the QLoRA lab's 32 behaviour prompts (``behaviour_reports.behaviour_prompt_sets``): the share
  of replies that hand off where the context held the answer and where a hand-off was needed
  (shown, not used to pick).

Runs are given as ``STEPS:SHARE``. The rows (one per setting and seed) are saved to
``results/<profile>/sweeps.json`` (section ``training``) with the pick of
:func:`ftrag.sweeps.pick_training`, which the profile's training settings must equal (a unit test
checks it). It asserts nothing about the figures: they are for reading, and the QLoRA lab plots them.
"""
from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_RUNS = ("24:0.5", "48:0.5", "24:0.2", "48:0.2")


def _run(spec: str) -> tuple[int, float]:
    try:
        steps, share = spec.split(":")
        return int(steps), float(share)
    except ValueError:
        raise SystemExit(f"a run is STEPS:SHARE, such as 24:0.5; got {spec!r}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", default=list(DEFAULT_RUNS), metavar="STEPS:SHARE",
                        help=f"training settings to measure (default: {' '.join(DEFAULT_RUNS)})")
    parser.add_argument("--seeds", nargs="+", type=int, default=None,
                        help="training seeds per setting (default: ftrag.sweeps.TRAINING_SEEDS)")
    args = parser.parse_args()
    runs = [_run(spec) for spec in args.runs]

    sys.path.insert(0, str(REPO / "data" / "scripts"))
    import make_finetune

    from ftrag import behaviour_reports, data, profiles, rag, sweeps, systems, training

    seeds = args.seeds or list(sweeps.TRAINING_SEEDS)
    if len(set(seeds)) != len(seeds) or len(set(runs)) != len(runs):
        raise SystemExit(f"each setting and each seed once, please; got {args.runs} and {seeds}")
    profile = profiles.get_profile()
    course = data.load_all()
    rag.configure(profile)
    index = rag.ensure_index(course.kb)
    tok = profiles.load_tokenizer(profile)
    prompt_sets = behaviour_reports.behaviour_prompt_sets(course, profile)
    conversations = prompt_sets["validation"][0] + prompt_sets["format"][0]
    expected = prompt_sets["validation"][1] + prompt_sets["format"][1]
    print(f"{profile.name} profile, {profiles.device_summary(profile)}; seeds {seeds}; the hybrid (top-k "
          f"{profile.hybrid_top_k}) on the dev split: {len(course.dev.knowledge)} knowledge, "
          f"{len(course.dev.unanswerable)} unanswerable questions; {len(conversations)} behaviour prompts, "
          f"{sum(bool(e) for e in expected)} of them call for a hand-off", flush=True)

    saved = []
    for steps, share in runs:
        with tempfile.TemporaryDirectory() as tmp:
            make_finetune.write(Path(tmp), share)
            train = data.load_finetune("train", Path(tmp) / "train.jsonl")
            val = data.load_finetune("val", Path(tmp) / "val.jsonl")
        handoff_chats = sum(e.kind == "handoff" for e in train)
        for seed in seeds:
            start = time.perf_counter()
            run = training.ensure_adapter(profile.with_training(max_steps=steps, seed=seed), "behaviour", train, val)
            generator = systems.tuned_generator(profile, run.adapter_dir, tokenizer=tok)
            report = behaviour_reports.behaviour_report(
                generator.generate(conversations, desc=f"{steps} steps, share {share}, seed {seed}: behaviour"), expected)
            hybrid = systems.System("hybrid", generator, rag.Retriever(index, profile.hybrid_top_k))
            dev = sweeps.dev_rows(hybrid, course.dev, course.knowledge)
            del generator, hybrid
            gc.collect()
            saved.append({"steps": steps, "handoff_share": share, "seed": seed, "split": dev["split"],
                          "handoff_chats": handoff_chats, "train_chats": len(train),
                          **{m: dev[m] for m in sweeps.TRAINING_METRICS},
                          "n_knowledge": dev["n_knowledge"], "n_unanswerable": dev["n_unanswerable"],
                          "json_valid": report["json_valid"],
                          "handoff_when_answer_needed": report["handoff_reply_when_not_needed"],
                          "handoff_when_needed": report["handoff_reply_when_needed"],
                          "final_val_loss": run.val_losses[-1][1] if run.val_losses else None,
                          "train_seconds": run.seconds})
            row = saved[-1]
            print(f"{steps} steps, share {share}, seed {seed}: dev hand-off when unanswerable "
                  f"{row['refusal_accuracy']:.2f} | answers when retrieved {row['answer_rate_when_retrieved']:.2f} | "
                  f"knowledge {row['knowledge_accuracy']:.2f} | schema {row['schema_validity']:.2f} | behaviour "
                  f"prompts: hand-off where answer needed {row['handoff_when_answer_needed']:.2f}, where needed "
                  f"{row['handoff_when_needed']:.2f} | train {run.seconds:.0f} s{' (cached)' if run.cached else ''} | "
                  f"wall {time.perf_counter() - start:.0f} s", flush=True)

    means = sweeps.training_means(saved)
    header = ["steps", "handoff_share", *sweeps.TRAINING_METRICS]
    print(f"\nmean over seeds {seeds}, dev split\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in means:
        print("| " + " | ".join(f"{row[h]:.2f}" if isinstance(row[h], float) else str(row[h]) for h in header) + " |")
    steps, share = sweeps.pick_training(saved)
    path = sweeps.save(profile.name, "training", {"rows": saved, "picked": {"steps": steps, "handoff_share": share},
                                                   "seeds": seeds, "prompts": len(conversations),
                                                   "top_k": profile.hybrid_top_k})
    print(f"\npicked: {steps} steps, hand-off share {share} (saved to {path})")


if __name__ == "__main__":
    main()

"""Benchmark: how much does one QLoRA training run vary with its random seed?

    python benchmarks/seed_variance.py               # seeds 0-4, about 15 minutes on 2 cores (24 steps)
    python benchmarks/seed_variance.py --seeds 0 7

Each seed trains the profile's behaviour adapter (``training.ensure_adapter``, so an adapter already in
``.cache/adapters`` is read back; seed 0 is the labs' own) on the same data with the same settings,
then asks the hybrid (that adapter plus the profile's retriever) the test-split questions the hybrid
lab reports on, and judges the same replies behind the profile's hand-off gate (no new generation). It prints, per seed, the hybrid's hand-off rate on the unanswerable questions, its
answer rate where its article was retrieved, knowledge accuracy and schema validity, each with its
95% Wilson interval, and saves them to ``results/<profile>/seed_variance.json``, which the hybrid
chapter plots. It picks nothing: no setting is chosen from these figures, and it asserts nothing
about them.
"""
from __future__ import annotations

import argparse
import gc
import time
from pathlib import Path

from ftrag import data, profiles, rag, seed_variance, systems, training


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=list(seed_variance.DEFAULT_SEEDS),
                        help="training seeds (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where to write the JSON (default: results/<profile>/seed_variance.json, the file "
                             "the hybrid chapter plots)")
    args = parser.parse_args()
    if len(set(args.seeds)) != len(args.seeds):
        raise SystemExit(f"each seed once, please; got {args.seeds}")

    profile = profiles.get_profile()
    course = data.load_all()
    rag.configure(profile)
    index = rag.ensure_index(course.kb)
    knowledge, unanswerable = systems.evaluation_questions(course, profile)   # test split
    k_items = [(q.id, q.question) for q in knowledge]
    u_items = [(q.id, q.question) for q in unanswerable]
    tok = profiles.load_tokenizer(profile)
    print(f"{profile.name} profile, {profiles.device_summary(profile)}; test split: {len(k_items)} knowledge, "
          f"{len(u_items)} unanswerable questions; hybrid top-k {profile.hybrid_top_k}; "
          f"{profile.training.max_steps} training steps per seed", flush=True)

    rows = []
    for seed in args.seeds:
        start = time.perf_counter()
        run = training.ensure_adapter(profile.with_training(seed=seed), "behaviour",
                                      course.finetune_train, course.finetune_val)
        hybrid = systems.System("hybrid", systems.tuned_generator(profile, run.adapter_dir, tokenizer=tok),
                                rag.Retriever(index, profile.hybrid_top_k))
        scores = systems.score("hybrid", hybrid.ask(k_items, desc=f"seed {seed}: knowledge"), course.knowledge,
                               hybrid.ask(u_items, desc=f"seed {seed}: unanswerable"))
        gated_scores = None
        if profile.handoff_gate:  # the same replies (cached above); questions below the gate go unasked
            gated = systems.System("gated_hybrid", hybrid.generator, hybrid.retriever, handoff_below=profile.handoff_gate)
            gated_scores = systems.score("gated_hybrid", gated.ask(k_items, desc=f"seed {seed}: gated"), course.knowledge,
                                         gated.ask(u_items, desc=f"seed {seed}: gated"))
        rows.append(seed_variance.run_row(seed, scores, run, gated_scores))
        del hybrid
        gc.collect()
        row = rows[-1]
        print(f"seed {seed}: " + " | ".join(
            f"{m} {row[m]:.2f} [{row[m + '_ci'][0]:.2f}, {row[m + '_ci'][1]:.2f}]" for m in seed_variance.METRICS)
            + (f" | gated: refusal {row['gated_refusal_accuracy']:.2f}, answers {row['gated_answer_rate_when_retrieved']:.2f}"
               if gated_scores is not None else "")
            + f" | val loss {row['final_val_loss']:.3f} | train {run.seconds:.0f} s{' (cached)' if run.cached else ''}"
            f" | wall {time.perf_counter() - start:.0f} s", flush=True)

    path = seed_variance.save(profile.name, rows, split="test", top_k=profile.hybrid_top_k,
                              steps=profile.training.max_steps, path=args.out, handoff_gate=profile.handoff_gate)
    print(f"saved to {path}")


if __name__ == "__main__":
    main()

"""Benchmark: does the behaviour adapter learn *when* to hand off, or only *how often*?

    python benchmarks/handoff_decision.py            # the four default runs, about 15 minutes on 2 cores
    python benchmarks/handoff_decision.py --runs 24:0.5 96:0.5

Each run trains the profile's behaviour adapter (``training.ensure_adapter``, so a run already in
``.cache/adapters`` is read back, the lab's own 24-step adapter included) for ``STEPS`` optimizer
steps on the behaviour data built with ``data/scripts/make_finetune.py --handoff-share SHARE``,
then asks it the QLoRA lab's 32 behaviour prompts (``behaviour_reports.behaviour_prompt_sets``) and prints:

* ``hand-off, answer needed``: share of replies whose text hands off where the context held the
  answer (over-refusal);
* ``hand-off, hand-off needed``: the same share where a hand-off was right;
* ``gap``: the second minus the first. A model that reads the context to decide has a large gap;
  a model that has only learned how common hand-offs are has a gap near zero, whatever its level;
* ``flagged``: of the hand-off replies, the share that also set ``needs_human``.

Runs are given as ``STEPS:SHARE``. The default set crosses three training lengths with two
hand-off shares. The rows are saved to ``results/<profile>/sweeps.json`` (section ``training``)
with the pick of :func:`ftrag.sweeps.pick_training`, which the profile's training settings must
equal (a unit test checks it). It asserts nothing about the figures: they are for reading, and the
QLoRA lab plots them.
"""
from __future__ import annotations

import argparse
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
                        help=f"runs to measure (default: {' '.join(DEFAULT_RUNS)})")
    args = parser.parse_args()
    runs = [_run(spec) for spec in args.runs]

    sys.path.insert(0, str(REPO / "data" / "scripts"))
    import make_finetune

    from ftrag import behaviour_reports, data, profiles, sweeps, systems, training

    profile = profiles.get_profile()
    course = data.load_all()
    tok = profiles.load_tokenizer(profile)
    prompt_sets = behaviour_reports.behaviour_prompt_sets(course, profile)
    conversations = prompt_sets["validation"][0] + prompt_sets["format"][0]
    expected = prompt_sets["validation"][1] + prompt_sets["format"][1]
    print(f"{profile.name} profile, {profiles.device_summary(profile)}; {len(conversations)} behaviour prompts, "
          f"{sum(bool(e) for e in expected)} of them call for a hand-off")

    rows, saved = [], []
    for steps, share in runs:
        with tempfile.TemporaryDirectory() as tmp:
            make_finetune.write(Path(tmp), share)
            train = data.load_finetune("train", Path(tmp) / "train.jsonl")
            val = data.load_finetune("val", Path(tmp) / "val.jsonl")
        handoff_chats = sum(e.kind == "handoff" for e in train)
        start = time.perf_counter()
        run = training.ensure_adapter(profile.with_training(max_steps=steps), "behaviour", train, val)
        generator = systems.tuned_generator(profile, run.adapter_dir, tokenizer=tok)
        replies = generator.generate(conversations, desc=f"{steps} steps, share {share}")
        report = behaviour_reports.behaviour_report(replies, expected)
        del generator
        saved.append({"steps": steps, "handoff_share": share, "handoff_chats": handoff_chats,
                      "train_chats": len(train), "json_valid": report["json_valid"],
                      "handoff_when_answer_needed": report["handoff_reply_when_not_needed"],
                      "handoff_when_needed": report["handoff_reply_when_needed"],
                      "flagged": report.get("handoff_replies_flagged", float("nan")),
                      "train_seconds": run.seconds})
        rows.append({
            "steps": steps, "hand-off chats": f"{handoff_chats} of {len(train)}",
            "train s": f"{run.seconds:.0f}{' (cached)' if run.cached else ''}",
            "val loss": f"{run.val_losses[-1][1]:.2f}",
            "JSON valid": f"{report['json_valid']:.2f}",
            "hand-off, answer needed": f"{report['handoff_reply_when_not_needed']:.2f}",
            "hand-off, hand-off needed": f"{report['handoff_reply_when_needed']:.2f}",
            "gap": f"{report['handoff_reply_when_needed'] - report['handoff_reply_when_not_needed']:+.2f}",
            "flagged": f"{report.get('handoff_replies_flagged', float('nan')):.2f}",
            "wall s": f"{time.perf_counter() - start:.0f}",
        })
        print(" | ".join(f"{k} {v}" for k, v in rows[-1].items()), flush=True)

    header = list(rows[0])
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(row[h]) for h in header) + " |")
    steps, share = sweeps.pick_training(saved)
    path = sweeps.save(profile.name, "training", {"rows": saved, "picked": {"steps": steps, "handoff_share": share},
                                                   "prompts": len(conversations)})
    print(f"\npicked: {steps} steps, hand-off share {share} (saved to {path})")


if __name__ == "__main__":
    main()

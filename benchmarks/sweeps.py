"""Choose the retrieval and decoding settings on the dev split, and save the evidence.

    make sweeps                                   # both systems, every top-k (about 25 minutes on 2 cores)
    python benchmarks/sweeps.py --systems rag     # RAG only (no adapter needed)

For RAG (the profile's base model) and the hybrid (base + the behaviour adapter, trained or read
from ``.cache/adapters``), it asks the **dev** questions (``course.dev``: knowledge and unanswerable)
with top-k 1, 2, 3, 5 and 10 and records knowledge accuracy, refusal, schema validity, prompt tokens,
latency and the share of replies that ran into ``max_new_tokens``. Then, at each system's picked
top-k, it generates once with a generous token limit and reads off what smaller limits would have
given (greedy decoding does not look ahead, so a shorter limit is a truncation of the same reply).

Everything is saved to ``results/<profile>/sweeps.json`` with the picks of
:func:`ftrag.sweeps.pick_top_k` and :func:`ftrag.sweeps.pick_max_new_tokens`; the labs plot that
file and a unit test fails when the profile's settings disagree with it. Replies are cached
(``.cache/generations``), so a second run is quick. The test split is never read here.
"""
from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", nargs="+", default=["rag", "hybrid"], choices=["rag", "hybrid"])
    args = parser.parse_args()

    from ftrag import data, profiles, rag, sweeps, systems, training
    from ftrag.errors import CourseError

    profile = profiles.get_profile()
    course = data.load_all()
    dev = course.dev  # the only questions this script reads
    rag.configure(profile)
    index = rag.ensure_index(course.kb)
    tokenizer = profiles.load_tokenizer(profile)
    generators = {"rag": lambda: systems.base_generator(profile, tokenizer=tokenizer),
                  "hybrid": lambda: systems.tuned_generator(
                      profile, training.behaviour_adapter(profile).adapter_dir, tokenizer=tokenizer)}
    print(f"{profile.name} profile, {profiles.device_summary(profile)}; dev split: {len(dev.knowledge)} "
          f"knowledge + {len(dev.unanswerable)} unanswerable questions")
    top_k_rows, budget_rows = [], []
    long_budget = max(sweeps.MAX_NEW_TOKENS_CHOICES)
    for name in args.systems:
        start = time.perf_counter()
        generator = generators[name]()
        rows = sweeps.top_k_rows(name, generator, index, dev, questions=course.knowledge)
        top_k_rows += rows
        for r in rows:
            print(f"{name} top-{r['top_k']}: accuracy {r['knowledge_accuracy']:.3f}, refusal "
                  f"{r['refusal_accuracy']:.2f}, valid {r['schema_validity']:.2f}, {r['prompt_tokens']:.0f} "
                  f"prompt tokens, {r['median_latency_s']:.2f} s/answer", flush=True)
        k = sweeps.pick_top_k(rows, name)
        system = systems.System(name, generator, rag.Retriever(index, top_k=k))
        items = [(q.id, q.question) for q in (*dev.knowledge, *dev.unanswerable)]
        answers = system.ask(items, desc=f"{name} top-{k}, {long_budget} tokens", max_new_tokens=long_budget)
        budget_rows += sweeps.max_new_tokens_rows(name, answers, tokenizer, long_budget)
        print(f"{name}: picked top-{k} ({time.perf_counter() - start:.0f} s)", flush=True)
        del generator
    try:  # a run of one system keeps the other's saved rows
        saved = sweeps.load_saved(profile.name)
    except CourseError:
        saved = {}
    top_k_rows = sweeps.merge_system_rows(saved.get("top_k", {}).get("rows", []), top_k_rows)
    budget_rows = sweeps.merge_system_rows(saved.get("max_new_tokens", {}).get("rows", []), budget_rows)
    picks = {name: sweeps.pick_top_k(top_k_rows, name) for name in sorted({r["system"] for r in top_k_rows})}
    adapter = (sweeps.adapter_settings(profile) if "hybrid" in args.systems
               else saved.get("top_k", {}).get("adapter"))
    sweeps.save(profile.name, "top_k", {"rows": top_k_rows, "picked": picks, "adapter": adapter})
    budget = sweeps.pick_max_new_tokens(budget_rows)
    path = sweeps.save(profile.name, "max_new_tokens", {"rows": budget_rows, "picked": budget})
    for r in budget_rows:
        print(f"{r['system']} max_new_tokens {r['max_new_tokens']}: valid {r['schema_validity']:.2f}, "
              f"cut at the limit {r['replies_at_token_limit']:.2f}")
    print(f"picked: top-k {picks}, max_new_tokens {budget} (saved to {path})")


if __name__ == "__main__":
    main()

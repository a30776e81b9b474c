"""A hand-off gate in front of the hybrid: the similarity threshold chosen on the dev split.

    make sweeps-gate        # about 3 minutes on 2 cores (the hybrid's dev replies are usually cached)

The behaviour adapter decides *whether* to hand off from the prompt alone, and at 135M parameters it
decides badly (lab 3, and the seed spread of ``make bench-seeds``). A cheaper signal is already in
the pipeline: how similar the best retrieved chunk is to the question. This script puts a gate in
front of the hybrid (``systems.System(..., handoff_below=t)``: below ``t`` the question never reaches
the model and the system sends the fixed hand-off reply) and asks the **dev** questions for each ``t``
in ``sweeps.HANDOFF_GATE_CHOICES`` (0 = no gate). The pick (:func:`ftrag.sweeps.pick_handoff_gate`)
balances hand-offs on the unanswerable questions against answers where the article was retrieved.

Rows and pick go to ``results/<profile>/sweeps.json`` (section ``handoff_gate``) with the adapter, top-k
and token limit they ran with; a unit test fails when the profile's ``handoff_gate`` or those settings
disagree with the file. Run it after ``make sweeps`` and ``make bench-handoff``: the gate sits in
front of their picks. The test split is never read here.
"""
from __future__ import annotations

import time


def main() -> None:
    from ftrag import sweeps, systems, training

    profile, course, retriever = sweeps.dev_setup(hybrid=True)
    dev = course.dev  # the only questions this script reads
    tuned = systems.tuned_generator(profile, training.behaviour_adapter(profile).adapter_dir)
    rows = []
    for threshold in sweeps.HANDOFF_GATE_CHOICES:
        start = time.perf_counter()
        system = systems.System(f"hybrid, gate {threshold:.2f}", tuned, retriever, handoff_below=threshold)
        row = sweeps.dev_rows(system, dev, course.knowledge, handoff_below=threshold)
        rows.append(row)
        print(f"gate {threshold:.2f}: hand-offs {row['refusal_accuracy']:.2f}, answers when retrieved "
              f"{row['answer_rate_when_retrieved']:.2f} (balance {sweeps.gate_balance(row):.3f}), accuracy "
              f"{row['knowledge_accuracy']:.3f}, valid {row['schema_validity']:.2f} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    picked = sweeps.pick_handoff_gate(rows)
    path = sweeps.save(profile.name, "handoff_gate", {
        "rows": rows, "picked": picked, "top_k": profile.hybrid_top_k, "max_new_tokens": profile.max_new_tokens,
        "adapter": sweeps.adapter_settings(profile)})
    print(f"picked: hand off below a similarity of {picked:.2f} (saved to {path})")


if __name__ == "__main__":
    main()

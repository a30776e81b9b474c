"""Prompt before you train: choose the few-shot and constrained-decoding settings on the dev split.

    make sweeps-prompt        # about 15 minutes on 2 cores (replies are cached: a re-run is quick)

First, which instruction gets the most answers right when the schema is not asked for
(``sweeps.RAG_INSTRUCTION_CHOICES``, :data:`ftrag.prompts.INSTRUCTIONS`): lab 3's knowledge-first RAG
system (``extractive_rag`` when the pick is "extract") uses the pick.

Then two ways to get the answer schema without training, both over the profile's base model with the
RAG retriever at the profile's top-k (the system lab 3 calls ``rag``):

* **few-shot**: the system prompt plus k worked examples from the behaviour training chats
  (:mod:`ftrag.few_shot`), k in ``sweeps.FEW_SHOT_CHOICES`` (k = 0 is plain RAG);
* **constrained**: the schema enforced while decoding (:mod:`ftrag.constrained`, xgrammar), with the
  answer capped at each of ``sweeps.MAX_ANSWER_CHARS_CHOICES`` characters.

Each is asked the **dev** questions only. The picks (:func:`ftrag.sweeps.pick_few_shot`,
:func:`ftrag.sweeps.pick_max_answer_chars`) and every row are saved to ``results/<profile>/sweeps.json``
(sections ``rag_instruction``, ``few_shot`` and ``constrained``); lab 3 reports the chosen systems on the test split and a
unit test fails when the profile's settings disagree with the saved picks.
"""
from __future__ import annotations

import time


def main() -> None:
    from ftrag import few_shot, profiles, sweeps, systems

    profile, course, retriever = sweeps.dev_setup()
    dev = course.dev  # the only questions this script reads
    tokenizer = profiles.load_tokenizer(profile)
    model = profiles.load_model(profile)
    base = systems.base_generator(profile, model=model, tokenizer=tokenizer)

    instruction_rows = []
    for name in sweeps.RAG_INSTRUCTION_CHOICES:
        start = time.perf_counter()
        system = systems.System(f"RAG, {name} instruction", base, retriever, instruction=name)
        instruction_rows.append(sweeps.dev_rows(system, dev, course.knowledge, instruction=name))
        _print(instruction_rows[-1], f"instruction {name}", start)
    instruction = sweeps.pick_rag_instruction(instruction_rows)
    ran_with = {"top_k": profile.retrieval_top_k, "max_new_tokens": profile.max_new_tokens}
    sweeps.save(profile.name, "rag_instruction", {"rows": instruction_rows, "picked": instruction, **ran_with})

    few_rows = []
    for k in sweeps.FEW_SHOT_CHOICES:
        start = time.perf_counter()
        examples = few_shot.pick_examples(course.finetune_train, k)
        few_shot.check_no_leak(examples, course)
        system = systems.System(f"few-shot k={k}", base, retriever, few_shot.example_messages(examples))
        few_rows.append(sweeps.dev_rows(system, dev, course.knowledge, few_shot_k=k))
        _print(few_rows[-1], f"few-shot k={k}", start)
    k = sweeps.pick_few_shot(few_rows)
    sweeps.save(profile.name, "few_shot", {"rows": few_rows, "picked": k, **ran_with})

    constrained_rows = []
    for cap in sweeps.MAX_ANSWER_CHARS_CHOICES:
        start = time.perf_counter()
        generator = systems.constrained_generator(profile, model=model, tokenizer=tokenizer, max_answer_chars=cap)
        system = systems.System(f"constrained {cap} chars", generator, retriever)
        row = sweeps.dev_rows(system, dev, course.knowledge, max_answer_chars=cap)
        row["overhead_ms_per_token"] = generator.constraint.overhead_ms_per_token
        constrained_rows.append(row)
        _print(row, f"constrained, answer <= {cap} chars", start)
    cap = sweeps.pick_max_answer_chars(constrained_rows)
    path = sweeps.save(profile.name, "constrained", {"rows": constrained_rows, "picked": cap, **ran_with})
    print(f"picked: the {instruction!r} instruction for knowledge-first RAG, {k} few-shot examples, answers "
          f"capped at {cap} characters (saved to {path})")


def _print(row: dict, label: str, start: float) -> None:
    print(f"{label}: accuracy {row['knowledge_accuracy']:.3f}, valid {row['schema_validity']:.2f}, refusal "
          f"{row['refusal_accuracy']:.2f}, answers when retrieved {row['answer_rate_when_retrieved']:.2f}, "
          f"{row['prompt_tokens']:.0f} prompt tokens ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()

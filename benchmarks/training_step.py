"""Benchmark: one QLoRA step of four behaviour chats, padded vs packed with the shared prompt once.

    python benchmarks/training_step.py [--trials 6]

Builds the QLoRA lab's model (``training.qlora_model``: the base in 4-bit NF4 with LoRA), draws
random steps of ``batch_size`` training chats, and times the forward + backward pass of each step
three ways, interleaved so that a slower minute on a shared machine hits all of them alike:

* ``padded 2x2``: two padded micro-batches of two (the cpu profile's setting before packing),
* ``padded 4``: one padded batch of four,
* ``packed``: one row from ``cpu_speedups.pack_shared_prefix``.

It prints the tokens each way reads and the seconds per step, and checks that the packed loss
equals the padded one. It asserts nothing about time: the figures are for reading.
"""
from __future__ import annotations

import argparse
import random
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6, help="random steps to time (default 6)")
    args = parser.parse_args()

    from transformers import DataCollatorForSeq2Seq

    from ftrag import cpu_speedups, data, encoding, profiles, training

    profile = profiles.get_profile()
    s = profile.training
    tok = profiles.load_tokenizer(profile)
    encoded = encoding.encode_examples(tok, data.load_finetune("train"), s.max_seq_len)
    model = training.qlora_model(profile)  # exactly the model the lab trains
    model.train()
    pad = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=encoding.IGNORE_INDEX)

    def padded(chats, parts):
        size = len(chats) // parts
        batches = [pad([dict(c) for c in chats[i:i + size]]) for i in range(0, len(chats), size)]
        return batches, sum(b["input_ids"].numel() for b in batches)

    def packed(chats):
        row = cpu_speedups.pack_shared_prefix(chats)
        return [row], row["input_ids"].numel()

    ways = {"padded 2x2": lambda c: padded(c, 2), "padded 4": lambda c: padded(c, 1), "packed": packed}
    seconds = {name: [] for name in ways}
    tokens = {name: [] for name in ways}
    losses = {name: [] for name in ways}
    rng = random.Random(0)
    print(f"{profile.name} profile, {profiles.device_summary(profile)}; {args.trials} steps of {s.batch_size} chats, "
          f"LoRA r={s.lora_rank}, dropout {s.lora_dropout}")
    for trial in range(args.trials + 1):  # the first round warms up and is not counted
        chats = rng.sample(encoded, s.batch_size)
        names = list(ways)
        rng.shuffle(names)
        for name in names:
            batches, n_tokens = ways[name](chats)
            model.zero_grad(set_to_none=True)
            start = time.perf_counter()
            total = 0.0
            for batch in batches:
                loss = cpu_speedups.reply_only_loss(model, batch) / len(batches)
                loss.backward()
                total += loss.item()
            if trial:
                seconds[name].append(time.perf_counter() - start)
                tokens[name].append(n_tokens)
                losses[name].append(total)

    base = statistics.mean(seconds["padded 2x2"])
    print(f"{'way':<12} {'tokens/step':>12} {'s/step mean':>12} {'median':>8} {'vs 2x2':>8}")
    for name in ways:
        mean = statistics.mean(seconds[name])
        print(f"{name:<12} {statistics.mean(tokens[name]):>12.0f} {mean:>12.2f} {statistics.median(seconds[name]):>8.2f} "
              f"{mean / base - 1:>+8.0%}")
    gap = max(abs(a - b) / abs(a) for a, b in zip(losses["padded 4"], losses["packed"]))
    print(f"largest relative gap between the padded-4 and packed losses: {gap:.1e}")
    if gap > 1e-4:
        raise SystemExit("packed and padded losses differ: pack_shared_prefix is broken")


if __name__ == "__main__":
    main()

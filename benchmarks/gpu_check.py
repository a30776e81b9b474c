"""GPU check: does the gpu profile's QLoRA run fit, and how fast is it, for Qwen2.5-1.5B/3B/7B-Instruct?

    make gpu-check                       # = python benchmarks/gpu_check.py (at most about 8 minutes)
    python benchmarks/gpu_check.py --out results/gpu/gpu_check.json --steps 3

Needs one CUDA GPU and a CUDA build of PyTorch with transformers, peft and bitsandbytes (the
course's ``.venv`` has the CPU build of torch, so ``make gpu-check`` runs ``$(GPU_PYTHON)``, default
``python3``). No network: nothing is downloaded. The architectures come from
``src/ftrag/gpu_models.json`` (the models' published config.json values); each model is built with
random weights straight into 4-bit NF4 (``ftrag.gpu.build_nf4_model``: created on the meta device,
each linear layer filled on the GPU and quantised there), then gets the gpu profile's LoRA
adapters (``training.qlora_model``: rank 16, alpha 32, every linear layer of the blocks, gradient
checkpointing) and trains a few steps of the reply-only loss on random tokens shaped like a
padded batch of 8 behaviour chats. Measured per run: peak memory PyTorch allocated
(``torch.cuda.max_memory_allocated``) while loading and while training, seconds per step, tokens
per second. Each model runs on the whole GPU, then under
``torch.cuda.set_per_process_memory_fraction`` sized like a 16 GB T4 (with fp16 compute, as the
gpu profile picks on a T4) and like an 8 GB card (bf16), each run in its own process; an
out-of-memory error counts as "does not fit". One JSON file holds everything, with the predicted
memory (``ftrag.gpu.predict_qlora_memory``) next to the measured one. Without CUDA the script
stops at once with one line.

Carrying bitsandbytes to a GPU machine without package-index access: ``make gpu-check-bundle``
downloads the pinned wheel (``pip download bitsandbytes==0.50.2 --no-deps --platform
manylinux_2_24_x86_64 --only-binary=:all: -d .whl``) into the git-ignored ``.whl/``; copy that
folder along and install it there with ``pip install --no-index --no-deps .whl/bitsandbytes-*.whl``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

DEFAULT_OUT = ROOT / "results" / "gpu" / "gpu_check.json"
NO_CUDA = ("gpu_check: PyTorch sees no CUDA GPU, so there is nothing to measure. Run it on a machine with an "
           "NVIDIA GPU and a CUDA build of torch (make gpu-check GPU_PYTHON=/path/to/python).")
#: compute dtype per memory limit: the T4 has no fast bf16 (the gpu profile picks fp16 there)
CARD_DTYPES = {None: None, "16 GB card (T4)": "float16", "8 GB card": "bfloat16"}


def measure(model_id: str, card: str | None, steps: int) -> dict:
    """One run in this process: build, adapt, train ``steps`` steps; raises on OOM."""
    import torch

    from ftrag import gpu, profiles, training

    total = torch.cuda.get_device_properties(0).total_memory
    if card is not None:
        torch.cuda.set_per_process_memory_fraction(min(1.0, gpu.usable_bytes(gpu.CARDS[card]) / total))
    profile = profiles.gpu_profile_settings(model_id)
    dtype = getattr(torch, CARD_DTYPES[card]) if CARD_DTYPES[card] else profiles.compute_dtype(profile)
    s = profile.training
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    model = gpu.build_nf4_model(gpu.known_models()[model_id], device="cuda", compute_dtype=dtype)
    load_seconds = time.perf_counter() - t0
    load_peak = torch.cuda.max_memory_allocated()
    model = training.qlora_model(profile, model)
    batch = gpu.random_batch(model.config.vocab_size, s.batch_size, gpu.CHAT_TOKENS, gpu.REPLY_TOKENS, device="cuda")
    torch.cuda.reset_peak_memory_stats()
    timing = gpu.time_training_steps(model, batch, steps=steps, learning_rate=s.learning_rate,
                                     compute_dtype=dtype, device="cuda")
    return {"load_seconds": round(load_seconds, 2), "load_peak_gib": round(load_peak / 2**30, 3),
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3),
            "compute_dtype": str(dtype).removeprefix("torch."), **{k: round(v, 4) for k, v in timing.items()}}


def run_one(model_id: str, card: str | None, steps: int, timeout: float) -> dict:
    """:func:`measure` in a fresh process (a memory limit and an OOM must not leak into the next run)."""
    base = {"model": model_id, "card": card or "whole GPU"}
    cmd = [sys.executable, __file__, "--one", model_id, "--steps", str(steps)] + (["--card", card] if card else [])
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
    except subprocess.TimeoutExpired:
        return {**base, "error": f"over {timeout:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode == 0 and lines:
        return {**base, **json.loads(lines[-1])}
    if "OutOfMemoryError" in done.stderr or "out of memory" in done.stderr:
        return {**base, "oom": True}
    return {**base, "error": (done.stderr.strip().splitlines() or ["no output"])[-1][:300]}


def report(runs: list[dict], steps: int) -> dict:
    import torch

    from ftrag import gpu, profiles

    props = torch.cuda.get_device_properties(0)
    training = profiles.gpu_profile_settings(profiles.DEFAULT_GPU_MODEL).training
    return {
        "measured": time.strftime("%Y-%m-%d %H:%M"),
        "gpu": props.name, "gpu_total_gib": round(props.total_memory / 2**30, 2),
        "compute_capability": ".".join(map(str, torch.cuda.get_device_capability())),
        "versions": profiles.library_versions(), "steps_timed": steps,
        "batch": {"rows": training.batch_size, "tokens_per_row": gpu.CHAT_TOKENS, "reply_tokens_per_row": gpu.REPLY_TOKENS},
        "cards_mib": gpu.CARDS, "cuda_context_mib_assumed": gpu.CUDA_CONTEXT_MIB,
        "predicted_gib": {m: gpu.predict_qlora_memory(a, training).as_gib() for m, a in gpu.known_models().items()},
        "runs": runs, "fits": gpu.fits_table([r for r in runs if r["card"] != "whole GPU"]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON file to write (default {DEFAULT_OUT.relative_to(ROOT)})")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per run, after one warm-up")
    parser.add_argument("--budget", type=float, default=450, help="seconds for all runs together (default 450)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--card", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print(NO_CUDA)
        return 2
    if args.one:
        print(json.dumps(measure(args.one, args.card, args.steps)))
        return 0
    from ftrag import gpu

    start, runs = time.perf_counter(), []
    for card in CARD_DTYPES:
        for model_id in gpu.known_models():
            left = args.budget - (time.perf_counter() - start)
            if left < 20:
                runs.append({"model": model_id, "card": card or "whole GPU", "error": "time budget spent"})
                continue
            runs.append(run_one(model_id, card, args.steps, timeout=left))
            print(json.dumps(runs[-1]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report(runs, args.steps), indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

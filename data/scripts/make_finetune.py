"""Generate the behaviour fine-tuning set: data/finetune/train.jsonl and val.jsonl.

The examples teach *behaviour*, not facts. Every passage comes from an invented practice pool about
other fictional businesses (practice_pool.py: a bike shop, a bakery, a museum, a library, ...), never
from the Lumio knowledge base. Three kinds of example:

* grounded: 1-3 passages, one of them answers the question; the reply copies the fact, cites exactly
  that passage id and sets needs_human=false;
* handoff: 1-3 passages, none answers the question; the reply is ftrag.prompts.HANDOFF_ANSWER with
  no sources and needs_human=true;
* chitchat: no passages, small talk; a short friendly reply, no sources, needs_human=false.

The system and user messages are exactly ftrag.prompts.chat(question, passages) and the assistant
message is exactly ftrag.prompts.answer_json(...), so training and inference see the same layout.

Deterministic: a fixed seed and no other source of randomness, so running it twice gives
byte-identical files. Standard library only.

    PYTHONPATH=src python data/scripts/make_finetune.py            # writes data/finetune/
    PYTHONPATH=src python data/scripts/make_finetune.py --out /tmp/ft
    PYTHONPATH=src python data/scripts/make_finetune.py --out /tmp/ft --handoff-share 0.2   # fewer hand-offs

``--handoff-share`` changes the mix (benchmarks/handoff_decision.py measures what that does); the
shipped files use the default.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.dont_write_bytecode = True  # keep data/scripts free of __pycache__
sys.path.insert(0, str(HERE))
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))

from practice_pool import CHITCHAT, FACTS, OPEN_QUESTIONS  # noqa: E402

from ftrag.data import FINETUNE_HANDOFF_SHARE as HANDOFF_SHARE  # noqa: E402  (the pick of `make bench-handoff`)
from ftrag.evaluate import parse_reply, voice_checks  # noqa: E402
from ftrag.prompts import HANDOFF_ANSWER, answer_json, chat  # noqa: E402

SEED = 20240917
VAL_BUSINESSES = ("vet", "music", "carshare")  # held out: val passages are about unseen businesses
VAL_CHITCHAT = 4
MAX_ANSWER_WORDS = 40

FRAMES = (
    "{core} Stay bright!",
    "Sure! {core} Stay bright!",
    "Happy to help! {core} Stay bright!",
    "Good question! {core} Stay bright!",
    "{core} Hope that helps! Stay bright!",
)


def _check_answer(answer: str) -> None:
    checks = voice_checks(answer)
    if not all(checks.values()) or len(answer.split()) >= MAX_ANSWER_WORDS:
        raise SystemExit(f"answer breaks the brand voice {checks}: {answer!r}")


def _example(kind: str, question: str, passages: list[tuple[str, str]], answer: str,
             sources: list[str], needs_human: bool) -> dict:
    _check_answer(answer)
    reply = answer_json(answer, sources, needs_human)
    assert parse_reply(reply).valid
    messages = chat(question, passages) + [{"role": "assistant", "content": reply}]
    return {"kind": kind, "messages": messages}


def _passages(rng: random.Random, target: tuple[str, str] | None, pool: list[tuple[str, str, str]],
              business: str, exclude: str | None) -> list[tuple[str, str]]:
    """target (or none) plus 0-2 distractors, half of the time from the same business."""
    n_distractors = rng.choice((0, 1, 1, 2, 2)) if target else rng.choice((1, 2, 2, 3))
    same = [(d, t) for d, t, b in pool if b == business and d != exclude]
    other = [(d, t) for d, t, b in pool if b != business]
    chosen: list[tuple[str, str]] = [target] if target else []
    while len(chosen) < (1 if target else 0) + n_distractors:
        source = same if (same and rng.random() < 0.6) else other
        cand = rng.choice(source)
        if cand not in chosen:
            chosen.append(cand)
    rng.shuffle(chosen)
    return chosen


def build(handoff_share: float = HANDOFF_SHARE) -> dict[str, list[dict]]:
    if not 0 <= handoff_share <= 1:
        raise SystemExit(f"handoff_share must be between 0 and 1, got {handoff_share}")
    rng = random.Random(SEED)
    for business, passage, _, _ in FACTS:
        assert "lumio" not in passage.lower(), passage
    ids = rng.sample(range(100, 1000), len(FACTS))
    docs = [(f"doc-{i}", passage, business) for i, (business, passage, _, _) in zip(ids, FACTS)]
    splits: dict[str, list[dict]] = {"train": [], "val": []}
    for split in splits:
        in_split = (lambda b: b in VAL_BUSINESSES) if split == "val" else (lambda b: b not in VAL_BUSINESSES)
        pool = [d for d in docs if in_split(d[2])]
        out = splits[split]
        for (doc_id, passage, business), (_, _, questions, core) in zip(docs, FACTS):
            if not in_split(business):
                continue
            for question in questions:  # both phrasings as grounded examples
                answer = rng.choice(FRAMES).format(core=core)
                ctx = _passages(rng, (doc_id, passage), pool, business, doc_id)
                out.append(_example("grounded", question, ctx, answer, [doc_id], False))
            # the same question without its passage: the model must hand off instead of guessing
            if split == "val" or rng.random() < handoff_share:
                question = rng.choice(questions)
                ctx = _passages(rng, None, pool, business, doc_id)
                out.append(_example("handoff", question, ctx, HANDOFF_ANSWER, [], True))
        for business, question in OPEN_QUESTIONS:
            if in_split(business):
                ctx = _passages(rng, None, pool, business, None)
                out.append(_example("handoff", question, ctx, HANDOFF_ANSWER, [], True))
        talk = CHITCHAT[-VAL_CHITCHAT:] if split == "val" else CHITCHAT[:-VAL_CHITCHAT]
        for question, answer in talk:
            out.append(_example("chitchat", question, [], answer, [], False))
        rng.shuffle(out)
        for n, ex in enumerate(out, 1):
            out[n - 1] = {"id": f"ft-{split}-{n:04d}", **ex}
    return splits


def write(out_dir: Path, handoff_share: float = HANDOFF_SHARE) -> dict[str, int]:
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, rows in build(handoff_share).items():
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        (out_dir / f"{split}.jsonl").write_bytes(text.encode("utf-8"))
        counts[split] = len(rows)
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "data" / "finetune",
                        help="output folder (default: data/finetune)")
    parser.add_argument("--handoff-share", type=float, default=HANDOFF_SHARE,
                        help=f"share of training facts that also get a hand-off chat (default {HANDOFF_SHARE})")
    args = parser.parse_args(argv)
    counts = write(args.out, args.handoff_share)
    print(", ".join(f"{k}: {v} examples" for k, v in counts.items()), "->", args.out)


if __name__ == "__main__":
    main()

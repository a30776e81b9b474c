"""Generate data/eval/splits.jsonl: the fixed dev/test split of the evaluation questions.

Every setting the course picks by looking at results (top-k, token limits, training length, the
hand-off gate, few-shot examples) is picked on **dev**; every number a chapter quotes is measured on
**test**. The split is made once and committed, so it never moves when the questions are looked at.

Stratified: knowledge questions are grouped by the category of their gold article and by whether
their answer changes with the knowledge update; unanswerable questions form one group. Inside each
group the questions are shuffled with a fixed seed and every third one goes to dev (so a group of n
puts ceil(n/3) in dev), which gives about one third dev and two thirds test in every stratum.

Deterministic (fixed seed, standard library only): running it twice writes the same bytes.

    PYTHONPATH=src python data/scripts/make_splits.py             # writes data/eval/splits.jsonl
    PYTHONPATH=src python data/scripts/make_splits.py --out /tmp/splits.jsonl
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.dont_write_bytecode = True
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))

from ftrag import data  # noqa: E402

SEED = 20261202
DEV_EVERY = 3  # one question in three goes to dev


def strata(knowledge, unanswerable, kb) -> dict[tuple[str, ...], list[str]]:
    """Question ids grouped by (gold article category, changes with the update); unanswerable apart."""
    category = {a.id: a.category for a in kb}
    groups: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for q in knowledge:
        groups[("knowledge", category[q.article_ids[0]], str(q.changes_after_update))].append(q.id)
    groups[("unanswerable",)] = [q.id for q in unanswerable]
    return groups


def assign(groups: dict[tuple[str, ...], list[str]], seed: int = SEED) -> dict[str, str]:
    rng = random.Random(seed)
    split: dict[str, str] = {}
    for key in sorted(groups):
        ids = sorted(groups[key])
        rng.shuffle(ids)
        for i, qid in enumerate(ids):
            split[qid] = "dev" if i % DEV_EVERY == 0 else "test"
    return split


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "data" / "eval" / "splits.jsonl")
    args = parser.parse_args(argv)
    root = REPO / "data"
    kb = data.load_kb(root / "kb")
    knowledge = data.load_knowledge_questions(root / "eval" / "knowledge.jsonl")
    unanswerable = data.load_unanswerable(root / "eval" / "unanswerable.jsonl")
    split = assign(strata(knowledge, unanswerable, kb))
    order = [q.id for q in knowledge] + [q.id for q in unanswerable]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(json.dumps({"id": qid, "split": split[qid]}) + "\n" for qid in order))
    counts = defaultdict(int)
    for qid in order:
        counts[(qid[0], split[qid])] += 1
    print(f"wrote {args.out}: " + ", ".join(f"{k} {s}: {n}" for (k, s), n in sorted(counts.items())))


if __name__ == "__main__":
    main()

"""The "inject facts by fine-tuning" experiment of the QLoRA lab: which facts, how long to train,
and the gold answers of the phrasings the adapter was trained on."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .errors import DataError
from .evaluate import evenly_spaced

#: On the cpu profile the "inject facts" experiment uses this many of the 40 facts (4 training
#: phrasings and 1 paraphrase each), to fit the lab's time budget; gpu: all.
CPU_INJECT_FACTS = 10
#: Passes over the phrasings, at this multiple of the profile's learning rate. Measured on the cpu
#: profile (10 facts, 20 vs 30 steps): 2 epochs at 2x gave training phrasings 0.53 / paraphrases 0.40,
#: 3 epochs at 1x gave 0.48 / 0.40 in a third more time; 2 epochs at 3x gave 0.70 / 0.60.
INJECT_EPOCHS = 2
INJECT_LR_FACTOR = 2.0


def inject_setup(profile, train: Sequence[Any], test: Sequence[Any], *, n_facts: int | None = None,
                 epochs: float = INJECT_EPOCHS, lr_factor: float = INJECT_LR_FACTOR):
    """The facts-injection experiment: ``(profile with its training settings, train subset, test subset)``.

    The facts are spread evenly over the file (``n_facts``; default: all on gpu, 10 on cpu). The
    adapter trains for ``epochs`` passes over their phrasings at ``lr_factor`` times the profile's
    learning rate, enough to fit the phrasings it saw; no validation loss (the paraphrases are the test).
    """
    import math

    if n_facts is None:
        n_facts = None if profile.is_gpu else CPU_INJECT_FACTS
    facts = set(evenly_spaced(sorted({ex.fact_id for ex in train}), n_facts))
    train_sub = [ex for ex in train if ex.fact_id in facts]
    test_sub = [q for q in test if q.fact_id in facts]
    steps = max(1, math.ceil(epochs * len(train_sub) / profile.training.batch_size))
    tuned = profile.with_training(max_steps=steps, eval_every=steps, train_examples=None,
                                  learning_rate=profile.training.learning_rate * lr_factor)
    return tuned, train_sub, test_sub


def training_phrasing_answers(train: Sequence[Any], test: Sequence[Any]) -> list[tuple[str, ...]]:
    """Gold answers for each training example of the inject set (those of its fact's test question)."""
    by_fact = {q.fact_id: tuple(q.answers) for q in test}
    missing = sorted({ex.fact_id for ex in train} - set(by_fact))
    if missing:
        raise DataError(f"inject_facts: no test question (gold answers) for {', '.join(missing)}.")
    return [by_fact[ex.fact_id] for ex in train]

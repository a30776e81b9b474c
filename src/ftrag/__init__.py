"""ftrag: the code behind the "Fine-tuning vs RAG" course.

The labs import from here; each module owns one concern:

- :mod:`ftrag.profiles`   which model/embedder/dtype for the cpu and gpu profiles; loads them
- :mod:`ftrag.prompts`    the running example's prompt and answer schema
- :mod:`ftrag.data`       typed records, loaders and validation of ``data/``
- :mod:`ftrag.generation` batched greedy generation with token counts and timings
- :mod:`ftrag.rag`        index build/persist/load/update, retrieval evaluation, answering with citations
- :mod:`ftrag.encoding`   chat examples as training rows, the loss masked to the reply
- :mod:`ftrag.lora_targets`  which layers get LoRA adapters, and the adapter's size
- :mod:`ftrag.training`   QLoRA training: the objects of a run, the run, the adapter cache
- :mod:`ftrag.cpu_speedups`  the course's CPU speed-ups (shared-prefix packing, reply-only loss, ...)
- :mod:`ftrag.adapters`   saved adapters: files, hash, loading for inference
- :mod:`ftrag.merge_checks`  what survives a merge (NF4 vs full precision; teacher forcing)
- :mod:`ftrag.behaviour_reports`  scoring replies for behaviour and facts, side-by-side tables
- :mod:`ftrag.inject`     the "inject facts by fine-tuning" experiment
- :mod:`ftrag.costs`      measured memory, adapter size and generation speed
- :mod:`ftrag.systems`    the four systems compared in the course (base, RAG, fine-tuned, hybrid)
- :mod:`ftrag.evaluate`   metrics shared by every lab
- :mod:`ftrag.decide`     the executable decision table
- :mod:`ftrag.memory`     weight-memory arithmetic
- :mod:`ftrag.plots`      every figure the book shows
- :mod:`ftrag.results`    measured results saved by the labs and quoted by the chapters
- :mod:`ftrag.harmless_messages`  known-harmless library messages, silenced where they arise
- :mod:`ftrag.exercises`  the exercises' self-checks (:mod:`ftrag.exercise_data`: their made-up data)
- :mod:`ftrag.lab_timings`  the labs' measured run times, for the instructor notes
"""
import os as _os

# The cpu profile never touches the network: tell the Hugging Face libraries before they are
# imported (they read these variables once, at import time).
if _os.environ.get("FTRAG_PROFILE", "cpu").strip().lower() in ("", "cpu"):
    _os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
_os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# bitsandbytes logs a harmless notice while it is imported (peft imports it on import): drop that
# one message before anything imports either (see ftrag.harmless_messages).
from .harmless_messages import drop_bitsandbytes_cpu_kernel_notice as _drop_bnb_notice  # noqa: E402

_drop_bnb_notice()

__version__ = "0.1.0"

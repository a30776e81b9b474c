"""Known-harmless messages of the libraries the course uses, each silenced only where it arises.

The labs' outputs are published, and a warning there reads as a fault in the course. Every message
silenced here was checked to be harmless (the docstrings say why), is matched by its own text, and
is silenced only around the calls that emit it: any other message of the same library, or the same
message from another call, still shows. Nothing here silences a category or a library as a whole.
"""
from __future__ import annotations

import contextlib
import io
import logging
import sys
import warnings
from collections.abc import Iterator

#: The logger and the start of the message bitsandbytes logs at import on a CPU with AVX512-BF16.
BNB_CPU_LOGGER = "bitsandbytes.backends.cpu.ops"
BNB_CPU_KERNEL_NOTICE = "Failed to load CPU gemm_4bit_forward from kernels-community"

#: FutureWarnings transformers 5.x raises when peft 0.21 uses the old names of its checkpointing API.
PEFT_OLD_NAME_WARNINGS = (
    r"`is_gradient_checkpointing` is deprecated",       # PeftModel.__init__ reads it (every adapter)
    r"`gradient_checkpointing_enable` is deprecated",   # prepare_model_for_kbit_training calls it
)

#: llama-index's splitters print the notice below whenever a chunk leaves fewer than this many
#: tokens for text once its metadata is counted (node_parser/text/sentence.py and token.py).
SPLITTER_NOTICE_TOKENS = 50
SPLITTER_NOTICE = "Metadata length ("


class _DropLogMessage(logging.Filter):
    def __init__(self, start: str):
        super().__init__()
        self.start = start

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.start)


def drop_bitsandbytes_cpu_kernel_notice() -> None:
    """Drop bitsandbytes' "Failed to load CPU gemm_4bit_forward from kernels-community" (and only it).

    On a CPU with AVX512-BF16, importing bitsandbytes tries to fetch an optional fused 4-bit kernel
    from the Hugging Face hub (the ``kernels`` package). The cpu profile is offline and does not
    install that package, so the fetch fails, bitsandbytes logs this warning and keeps its own
    compiled CPU kernel, the one every figure of the course was measured with. The notice is logged
    while bitsandbytes is imported, and peft imports it as soon as peft itself is imported, so the
    filter must be in place before either: ``ftrag/__init__.py`` installs it (once).
    """
    logger = logging.getLogger(BNB_CPU_LOGGER)
    if not any(isinstance(f, _DropLogMessage) and f.start == BNB_CPU_KERNEL_NOTICE for f in logger.filters):
        logger.addFilter(_DropLogMessage(BNB_CPU_KERNEL_NOTICE))


@contextlib.contextmanager
def peft_old_name_warnings_dropped() -> Iterator[None]:
    """Around peft calls: drop transformers' FutureWarnings about the names peft still uses.

    transformers 5.x renamed gradient checkpointing to activation checkpointing and keeps the old
    names as aliases until v6, with a FutureWarning on each use. peft 0.21 (pinned) uses them inside
    ``PeftModel`` and ``prepare_model_for_kbit_training``; the aliases do exactly what the new names
    do, and there is nothing for a reader to change: the warning is addressed to peft.
    """
    with warnings.catch_warnings():
        for message in PEFT_OLD_NAME_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=FutureWarning)
        yield


@contextlib.contextmanager
def splitter_small_chunk_notice_dropped() -> Iterator[None]:
    """Around a llama-index split into chunks of fewer than :data:`SPLITTER_NOTICE_TOKENS` tokens:
    drop the splitter's printed "Metadata length (N) is close to chunk size (M). Resulting chunks
    are less than 50 tokens ..." lines.

    The splitter prints (it does not warn) that line once per article whenever fewer than 50 tokens
    are left for text. For a chunk size the reader set below 50 on purpose (lab 1's deliberately bad
    24-token chunking) it only repeats what was asked for, 52 times. Everything else printed in the
    block is passed on unchanged, after the block.
    """
    captured = io.StringIO()
    try:
        with contextlib.redirect_stdout(captured):
            yield
    finally:
        kept = [line for line in captured.getvalue().splitlines(keepends=True)
                if not line.startswith(SPLITTER_NOTICE)]
        if kept:
            sys.stdout.write("".join(kept))

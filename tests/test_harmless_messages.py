"""Known-harmless library messages are dropped where they arise, and nothing else is."""
import logging
import warnings

import pytest

from ftrag import harmless_messages, rag
from test_rag import ARTICLES


def test_the_bitsandbytes_kernel_notice_is_dropped_and_its_other_messages_are_not(caplog):
    import ftrag  # noqa: F401  (installs the filter on import, before peft or bitsandbytes load)

    logger = logging.getLogger(harmless_messages.BNB_CPU_LOGGER)
    with caplog.at_level(logging.WARNING, logger=harmless_messages.BNB_CPU_LOGGER):
        logger.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make sure you "
                       "already `pip install kernels` and the kernels >= 0.11.1", "offline")
        logger.warning("Some other bitsandbytes warning")
    assert [r.getMessage() for r in caplog.records] == ["Some other bitsandbytes warning"]
    harmless_messages.drop_bitsandbytes_cpu_kernel_notice()  # a second call adds no second filter
    assert sum(isinstance(f, harmless_messages._DropLogMessage) for f in logger.filters) == 1


def test_peft_old_name_warnings_are_dropped_only_inside_the_block():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with harmless_messages.peft_old_name_warnings_dropped():
            warnings.warn("`is_gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning)
            warnings.warn("`gradient_checkpointing_enable` is deprecated and will be removed in v6.", FutureWarning)
            warnings.warn("`something_else` is deprecated", FutureWarning)
        warnings.warn("`is_gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning)
    assert [str(w.message) for w in caught] == ["`something_else` is deprecated",
                                                "`is_gradient_checkpointing` is deprecated and will be removed in v6."]


def test_tiny_chunks_split_without_the_splitters_notice(capsys):
    """Lab 1's deliberately bad 24-token chunking made llama-index print one notice per article."""
    chunks = rag.chunk(ARTICLES, rag.BAD_CHUNKING)
    assert len(chunks) >= len(ARTICLES)
    assert "Metadata length" not in capsys.readouterr().out


def test_the_notice_filter_passes_every_other_line_on(capsys):
    with harmless_messages.splitter_small_chunk_notice_dropped():
        print("Metadata length (2) is close to chunk size (24). Resulting chunks are less than 50 tokens.")
        print("a line of the reader's own")
    assert capsys.readouterr().out == "a line of the reader's own\n"


@pytest.mark.parametrize("size", [harmless_messages.SPLITTER_NOTICE_TOKENS, 128])
def test_chunkings_of_50_tokens_or_more_are_left_alone(size, monkeypatch):
    entered = []
    monkeypatch.setattr(harmless_messages, "splitter_small_chunk_notice_dropped", lambda: entered.append(1))
    rag.chunk(ARTICLES, rag.ChunkSettings(size, 0))
    assert not entered

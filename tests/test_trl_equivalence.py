"""TRL's SFTTrainer (the pinned trl 1.16.0) with completion-only loss supervises exactly the tokens the
course's masking does (``encoding.encode_example``: -100 over the prompt, the reply and its
end-of-turn token kept) and gives the same loss, on real behaviour chats and the SmolLM2 tokenizer.

Lab 2 quotes these findings where it shows the SFTTrainer equivalent of its Trainer."""
import pytest

from ftrag import cpu_speedups, data, encoding

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

N_EXAMPLES = 4


@pytest.fixture(scope="module")
def chats():
    return data.load_finetune("train")[:N_EXAMPLES]


def _sft_trainer(model, tok, rows, tmp_path):
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, max_length=None,
                     completion_only_loss=True, gradient_checkpointing=False, disable_tqdm=True)
    return SFTTrainer(model=model, processing_class=tok, train_dataset=datasets.Dataset.from_list(rows), args=args)


def _text_rows(tok, chats):
    """Standard prompt-completion rows: the templated prompt (with the assistant header) and the reply."""
    return [{"prompt": tok.apply_chat_template([dict(m) for m in c.messages[:-1]], add_generation_prompt=True,
                                               tokenize=False),
             "completion": c.messages[-1]["content"]} for c in chats]


def test_trl_is_the_pinned_version():
    assert trl.__version__ == "1.16.0"


def test_sft_completion_only_labels_are_the_course_labels(tiny_model, chats, tmp_path):
    model, tok = tiny_model
    trainer = _sft_trainer(model, tok, _text_rows(tok, chats), tmp_path / "text")
    for chat, row in zip(chats, trainer.train_dataset, strict=True):
        ours = encoding.encode_example(tok, chat, 512)
        assert row["input_ids"] == ours["input_ids"]
        assert row["labels"] == ours["labels"]
        assert row["labels"][-1] == tok.eos_token_id  # <|im_end|> is supervised by both


def test_sft_conversational_rows_supervise_one_token_more(tiny_model, chats, tmp_path):
    """Chat-message rows are rendered by the chat template, which ends a turn with '<|im_end|>\\n':
    the same tokens and labels as the course, plus the newline, supervised."""
    model, tok = tiny_model
    rows = [{"prompt": [dict(m) for m in c.messages[:-1]], "completion": [dict(c.messages[-1])]} for c in chats]
    trainer = _sft_trainer(model, tok, rows, tmp_path / "chat")
    for chat, row in zip(chats, trainer.train_dataset, strict=True):
        ours = encoding.encode_example(tok, chat, 512)
        assert row["input_ids"][:-1] == ours["input_ids"] and row["labels"][:-1] == ours["labels"]
        assert tok.decode(row["labels"][-1:]) == "\n"


def test_sft_loss_is_the_course_loss(tiny_model, chats, tmp_path):
    import torch
    from transformers import DataCollatorForSeq2Seq

    model, tok = tiny_model
    trainer = _sft_trainer(model, tok, _text_rows(tok, chats), tmp_path / "loss")
    theirs_batch = trainer.data_collator([{"input_ids": r["input_ids"], "labels": r["labels"]}
                                          for r in trainer.train_dataset])
    encoded = encoding.encode_examples(tok, chats, 512)
    padded = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=encoding.IGNORE_INDEX)(encoded)
    with torch.no_grad():
        theirs = trainer.compute_loss(model, theirs_batch)
        ours = cpu_speedups.reply_only_loss(model, padded)
        packed = cpu_speedups.reply_only_loss(model, cpu_speedups.pack_shared_prefix(encoded))
        unmasked = model(**{**padded, "labels": padded["input_ids"].masked_fill(padded["attention_mask"] == 0, -100)}).loss
    assert torch.isclose(theirs, ours, rtol=1e-5), (theirs, ours)
    assert torch.isclose(theirs, packed, rtol=1e-4), (theirs, packed)
    assert not torch.isclose(theirs, unmasked, rtol=1e-2)  # the comparison can tell the masking apart

import json

from ftrag import prompts
from ftrag.generation import Generator


def test_batched_generation_matches_one_by_one_and_counts_tokens(tiny_model):
    model, tok = tiny_model
    gen = Generator(model, tok, max_new_tokens=12, batch_size=4)
    convs = [prompts.chat("Hi"), prompts.chat("What is a lamp? Answer briefly please.")]
    batched = gen.generate(convs, progress=False)
    single = [gen.answer(c) for c in convs]
    assert [b.text for b in batched] == [s.text for s in single]
    assert batched[0].prompt_tokens == gen.count_prompt_tokens(convs[0]) < batched[1].prompt_tokens
    assert all(0 < b.new_tokens <= 12 for b in batched)


def test_reply_cache_reuses_replies_by_prompt(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("FTRAG_CACHE_DIR", str(tmp_path))
    model, tok = tiny_model
    gen = Generator(model, tok, max_new_tokens=6, cache_tag="unit-test")
    first = gen.generate([prompts.chat("Hi")], progress=False)[0]
    lines = (tmp_path / "generations" / "unit-test.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["text"] == first.text
    again = Generator(model, tok, max_new_tokens=6, cache_tag="unit-test")
    again._generate = None  # a cache hit must not generate
    assert again.generate([prompts.chat("Hi")], progress=False)[0] == first


def test_token_budget_splits_long_prompts_into_smaller_batches(tiny_model):
    model, tok = tiny_model
    gen = Generator(model, tok, batch_size=4)
    encoded = [[0] * 100, [0] * 100, [0] * 900, [0] * 900]
    assert list(gen._batches([0, 1, 2, 3], encoded)) == [[0, 1], [2, 3]]

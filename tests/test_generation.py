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
    gen = Generator(model, tok, batch_size=4, token_budget=2048)
    encoded = [[0] * 100, [0] * 100, [0] * 900, [0] * 900]
    assert list(gen._batches([0, 1, 2, 3], encoded)) == [[0, 1], [2, 3]]
    assert list(Generator(model, tok, batch_size=3)._batches([0, 1, 2, 3], encoded)) == [[0, 1, 2], [3]]


def test_shared_prefix_length_leaves_every_row_a_token():
    from ftrag.generation import shared_prefix_length

    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 5]]) == 2
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2  # identical rows: the last token is each row's own
    assert shared_prefix_length([[1, 2, 3], [1, 2]]) == 1
    assert shared_prefix_length([[7, 2], [1, 2]]) == 0
    assert shared_prefix_length([[1, 2, 3]]) == 2 and shared_prefix_length([]) == 0


def test_prefix_sharing_gives_the_same_replies(tiny_model):
    """One pass over the shared system prompt, copied to every row, must not change a greedy reply:
    rows of different lengths (padding between the prefix and a row's own tokens), with and
    without a context block."""
    from ftrag.generation import MIN_SHARED_PREFIX, shared_prefix_length

    model, tok = tiny_model
    convs = [prompts.chat("Hi"), prompts.chat("How long is the warranty on a Halo lamp?"),
             prompts.chat("Is the store open on Sunday?", [("kb-1", "The store opens 10:00-16:00 on Sundays.")]),
             prompts.chat("Can I pause my plan?", [("kb-2", "Plans can be paused for up to three months."),
                                                   ("kb-3", "A paused plan keeps its price.")])]
    shared = Generator(model, tok, max_new_tokens=16, batch_size=4)
    plain = Generator(model, tok, max_new_tokens=16, batch_size=4, share_prefix=False)
    ids = [shared.prompt_ids(c) for c in convs]
    assert shared_prefix_length(ids) >= MIN_SHARED_PREFIX  # the system prompt is really shared
    with_sharing, without = shared.generate(convs, progress=False), plain.generate(convs, progress=False)
    assert [g.text for g in with_sharing] == [g.text for g in without]
    assert [g.prompt_tokens for g in with_sharing] == [len(i) for i in ids]

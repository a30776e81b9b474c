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


def test_greedy_decode_gives_the_tokens_of_generate(tiny_model):
    """Dropping finished rows from the batch (and the cache) must not change a greedy reply: rows of
    different prompt and reply lengths, some ending early, some cut by the token limit. (With a
    shared-prefix cache: the next test, through the Generator.)"""
    import torch

    from ftrag.generation import greedy_decode

    model, tok = tiny_model
    convs = [prompts.chat("Hi"), prompts.chat("Say yes."), prompts.chat("Write a long poem about lamps, please."),
             prompts.chat("Is the store open on Sunday?", [("kb-1", "The store opens 10:00-16:00 on Sundays.")])]
    ids = [list(tok.apply_chat_template(c, add_generation_prompt=True, tokenize=True, return_dict=False))
           for c in convs]
    width = max(len(r) for r in ids)
    input_ids = torch.full((len(ids), width), tok.eos_token_id)
    attention = torch.zeros_like(input_ids)
    for row, r in enumerate(ids):
        input_ids[row, width - len(r):], attention[row, width - len(r):] = torch.tensor(r), 1
    with torch.no_grad():
        reference = model.generate(input_ids=input_ids, attention_mask=attention, max_new_tokens=20, do_sample=False,
                                   pad_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)[:, width:].tolist()
        pruned = greedy_decode(model, input_ids, attention, max_new_tokens=20, eos_token_id=tok.eos_token_id)
    ended = [r.index(tok.eos_token_id) + 1 if tok.eos_token_id in r else len(r) for r in reference]
    assert len(set(ended)) > 1 and max(ended) == 20  # some rows end early, one runs to the limit
    assert pruned == [r[:n] for r, n in zip(reference, ended)]


def test_generator_replies_are_those_of_generate(tiny_model):
    """The Generator (shared prefix + greedy_decode) answers a batch as plain ``model.generate`` answers
    each prompt alone."""
    import torch

    model, tok = tiny_model
    convs = [prompts.chat("Hi"), prompts.chat("How long is the warranty on a Halo lamp?"),
             prompts.chat("Write a long poem about lamps, please.")]
    batched = Generator(model, tok, max_new_tokens=16, batch_size=4).generate(convs, progress=False)
    for conv, got in zip(convs, batched):
        ids = torch.tensor([tok.apply_chat_template(conv, add_generation_prompt=True, tokenize=True, return_dict=False)])
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=16, do_sample=False,
                                 pad_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id)
        assert got.text == tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()

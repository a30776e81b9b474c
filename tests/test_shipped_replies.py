"""The replies shipped with the course (ftrag.shipped_replies): read before generating, never written,
switched off by FTRAG_SHIPPED_REPLIES=0, and a malformed shipped file is a clear error."""
import json
from collections import Counter
from dataclasses import asdict

import pytest

from ftrag import profiles, prompts, results, shipped_replies
from ftrag.constrained import CONSTRAINT_VERSION, MAX_SOURCES
from ftrag.errors import CourseError, DataError
from ftrag.generation import GENERATION_VERSION, Generation, Generator

CONV = prompts.chat("How much is the Plus plan?")


class _Tokenizer:
    pad_token, eos_token = "<pad>", "<eos>"


def _generator(shipped_dir, fresh_text="generated here"):
    """A Generator whose model is never called: ``_generate`` stands in and records what it was asked."""
    gen = Generator(object(), _Tokenizer(), max_new_tokens=8, cache_tag="cpu-unit", shipped_dir=shipped_dir)
    gen.asked = []

    def fake_generate(conversations, max_new, desc, progress):
        gen.asked.extend(conversations)
        return [Generation(fresh_text, 5, 3, 0.1, 0.1) for _ in conversations]
    gen._generate = fake_generate
    return gen


def _ship(folder, text="shipped reply", conv=CONV, max_new=8):
    folder.mkdir(parents=True, exist_ok=True)
    row = {"key": Generator._key(conv, max_new), **asdict(Generation(text, 7, 4, 0.5, 2.0))}
    (folder / "cpu-unit.jsonl").write_text(json.dumps(row) + "\n", encoding="utf-8")


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("FTRAG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(shipped_replies.ENV, raising=False)
    monkeypatch.setattr(shipped_replies, "SOURCES", Counter())
    return tmp_path / "shipped", tmp_path / "cache" / "generations"


def test_a_shipped_reply_is_used_without_generating_and_is_not_copied_to_the_local_cache(dirs):
    shipped, local = dirs
    _ship(shipped)
    gen = _generator(shipped)
    reply = gen.generate([CONV, prompts.chat("Something new?")], progress=False)
    assert [r.text for r in reply] == ["shipped reply", "generated here"]
    assert reply[0].seconds == 0.5 and gen.asked == [prompts.chat("Something new?")]
    assert shipped_replies.SOURCES == Counter(shipped=1, generated=1)
    cached = [json.loads(line)["text"] for line in (local / "cpu-unit.jsonl").read_text().splitlines()]
    assert cached == ["generated here"]  # only what was generated here is written
    assert len((shipped / "cpu-unit.jsonl").read_text().splitlines()) == 1


def test_a_shipped_reply_needs_the_same_tag_and_token_limit(dirs):
    shipped, _ = dirs
    _ship(shipped, max_new=16)  # shipped for another token limit
    assert _generator(shipped).generate([CONV], progress=False)[0].text == "generated here"
    other_tag = _generator(shipped)
    other_tag.cache_tag = "cpu-other"
    _ship(shipped)
    assert other_tag.generate([CONV], progress=False)[0].text == "generated here"


def test_switching_shipped_replies_off_generates_everything(dirs, monkeypatch):
    shipped, _ = dirs
    _ship(shipped)
    monkeypatch.setenv(shipped_replies.ENV, "0")
    gen = _generator(shipped)
    assert gen.generate([CONV], progress=False)[0].text == "generated here" and gen.asked == [CONV]
    assert shipped_replies.SOURCES == Counter(generated=1)
    assert "FTRAG_SHIPPED_REPLIES=0" in shipped_replies.summary()


def test_the_local_cache_wins_over_a_shipped_reply_and_counts_as_cached(dirs):
    shipped, _ = dirs
    _generator(None, fresh_text="from this machine").generate([CONV], progress=False)
    _ship(shipped)
    gen = _generator(shipped)
    assert gen.generate([CONV], progress=False)[0].text == "from this machine" and gen.asked == []
    assert shipped_replies.SOURCES["cached"] == 1


def test_a_reply_generated_here_counts_as_cached_when_asked_again(dirs):
    gen = _generator(dirs[0])
    gen.generate([CONV], progress=False)
    gen.generate([CONV], progress=False)
    assert shipped_replies.SOURCES == Counter(generated=1, cached=1)
    assert "1 generated now" in shipped_replies.summary()


@pytest.mark.parametrize("line, says", [("{not json", "not a JSON object"),
                                        ('{"key": "k", "text": "t"}', "without prompt_tokens")])
def test_a_malformed_shipped_file_names_the_file_the_line_and_the_fix(dirs, line, says):
    shipped, _ = dirs
    shipped.mkdir()
    (shipped / "cpu-unit.jsonl").write_text(line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"cpu-unit.jsonl:1: .*{says}.*make replies"):
        _generator(shipped).generate([CONV], progress=False)


def test_an_unknown_switch_value_says_what_to_set(monkeypatch):
    monkeypatch.setenv(shipped_replies.ENV, "maybe")
    with pytest.raises(CourseError, match="set it to 1 .* or 0"):
        shipped_replies.enabled()


def test_ship_replaces_the_folder_with_sorted_checked_rows(tmp_path):
    source = tmp_path / "generations"
    source.mkdir()
    rows = [{"key": k, **asdict(Generation(f"reply {k}", 1, 1, 0.1, 0.1))} for k in ("b", "a", "c")]
    (source / "cpu-x.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (source / "gpu-x.jsonl").write_text(json.dumps(rows[0]) + "\n", encoding="utf-8")  # another profile
    target = tmp_path / "replies"
    target.mkdir()
    (target / "cpu-stale.jsonl").write_text("old\n", encoding="utf-8")
    written = shipped_replies.ship(source, "cpu", target)
    assert [p.name for p in written] == ["cpu-x.jsonl"] and sorted(p.name for p in target.iterdir()) == ["cpu-x.jsonl"]
    assert [json.loads(line)["key"] for line in written[0].read_text().splitlines()] == ["a", "b", "c"]
    with pytest.raises(CourseError, match="no cpu-.*make replies"):
        shipped_replies.ship(tmp_path / "empty", "cpu", target)


def test_the_committed_replies_match_the_cpu_profiles_generation_code():
    """A bumped GENERATION_VERSION, constraint version or answer cap makes the shipped files dead weight:
    this fails until `make replies` ships replies under the tags the labs now use."""
    profile = profiles.get_profile("cpu")
    names = sorted(p.name for p in shipped_replies.folder("cpu").glob("*.jsonl"))
    base = f"cpu-{profile.model_label}-base-{GENERATION_VERSION}"
    constrained = f"{base}-{CONSTRAINT_VERSION}-{profile.constrained_max_answer_chars}-{MAX_SOURCES}"
    assert f"{base}.jsonl" in names and f"{constrained}.jsonl" in names
    adapters = [n for n in names if n.startswith("cpu-adapter-")]
    assert len(adapters) == 2 and all(n.endswith(f"-{GENERATION_VERSION}.jsonl") for n in adapters)
    assert set(names) == {f"{base}.jsonl", f"{constrained}.jsonl", *adapters}
    for name in names:
        assert shipped_replies.read(shipped_replies.folder("cpu") / name)  # whole, and not empty


def test_a_lab_records_where_its_replies_came_from_on_its_first_run_only(tmp_path, monkeypatch):
    monkeypatch.setenv("FTRAG_RESULTS_DIR", str(tmp_path))
    monkeypatch.setattr(shipped_replies, "SOURCES", Counter(shipped=40, generated=2))
    line = results.record_lab_replies("lab_x")
    assert line.startswith("replies in this notebook: 40 shipped with the course, 0 from this machine's cache, 2 generated")
    monkeypatch.setattr(shipped_replies, "SOURCES", Counter(cached=42))  # the book build's second run
    results.record_lab_replies("lab_x")
    stored = results.load_timings()
    assert (stored["lab_x_replies_shipped"], stored["lab_x_replies_generated"], stored["lab_x_replies_cached"]) == (40, 2, 0)

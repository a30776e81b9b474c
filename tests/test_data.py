"""The course data set: the shipped files validate, meet their minimum sizes and keep their promises
(gold answers in gold articles, updates really change the changed facts, deterministic generators),
and the validator rejects broken files with a ``file:line:`` message."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ftrag import data as D
from ftrag.errors import DataError
from ftrag.evaluate import matches, normalize, parse_reply, voice_checks
from ftrag.paths import DATA_DIR, REPO_ROOT
from ftrag.prompts import HANDOFF_ANSWER, SIGN_OFF, answer_json, chat

MINIMUMS = {
    "kb_articles": 44,
    "kb_updates": 10,
    "knowledge_questions": 90,
    "knowledge_changed_by_update": 24,
    "unanswerable_questions": 24,
    "format_prompts": 30,
    "finetune_train": 320,
    "finetune_val": 56,
    "inject_facts": 40,
    "inject_test": 40,
}


@pytest.fixture(scope="module")
def course() -> D.CourseData:
    return D.load_all()


# --------------------------------------------------------------------------- shipped data


def test_shipped_data_validates_and_meets_minimums(course):
    counts = D.summary(course)
    for key, minimum in MINIMUMS.items():
        assert counts[key] >= minimum, (key, counts[key], minimum)


def test_load_all_is_fast():
    start = time.perf_counter()
    D.load_all()
    assert time.perf_counter() - start < 1.0


def test_articles_are_well_formed(course):
    for art in [*course.kb, *course.kb_updates]:
        assert art.id == art.path.stem and art.id.startswith("kb-")
        assert art.category in D.CATEGORIES
        assert 120 <= art.n_words <= 300, (art.id, art.n_words)
        assert art.body.count("\n\n") >= 2, f"{art.id}: body should have several paragraphs"
    assert {a.category for a in course.kb} == set(D.CATEGORIES)
    assert all(u.change for u in course.kb_updates)
    kb_ids = {a.id for a in course.kb}
    update_ids = {u.id for u in course.kb_updates}
    assert update_ids & kb_ids, "some updates must replace articles"
    assert update_ids - kb_ids, "some updates must add new articles"


def test_apply_updates_replaces_and_adds(course):
    after = {a.id: a for a in course.kb_after_update}
    assert len(after) == len(course.kb_after_update)
    for upd in course.kb_updates:
        assert after[upd.id] is upd
    for art in course.kb:
        if art.id not in {u.id for u in course.kb_updates}:
            assert after[art.id] is art
    assert [a.id for a in course.kb_after_update[: len(course.kb)]] == [a.id for a in course.kb]


def test_each_gold_variant_appears_in_its_gold_article(course):
    for q in course.knowledge:
        for variant in q.answers:
            assert any(matches(course.article(a).text, [variant]) for a in q.article_ids), (q.id, variant)
        for variant in q.gold_answers(after_update=True):
            assert any(matches(course.article(a, after_update=True).text, [variant])
                       for a in q.gold_article_ids(after_update=True)), (q.id, variant)


def test_changed_facts_really_change(course):
    changed = [q for q in course.knowledge if q.changes_after_update]
    for q in changed:
        old_text = " ".join(course.article(a).text for a in q.article_ids)
        new_text = " ".join(course.article(a, after_update=True).text for a in q.updated_article_ids)
        assert not matches(new_text, q.answers), f"{q.id}: old answer still in the updated article"
        assert not matches(old_text, q.updated_answers), f"{q.id}: new answer already in the old article"
    assert len({q.updated_article_ids for q in changed}) >= 10, "changes should be spread over many articles"


def test_questions_are_not_copied_from_articles(course):
    """Customers' phrasing, not article sentences: no question is a substring of its article."""
    for q in course.knowledge:
        text = normalize(" ".join(course.article(a).text for a in q.article_ids))
        assert normalize(q.question) not in text, q.id


def test_unanswerable_questions_do_not_overlap_knowledge(course):
    known = {normalize(q.question) for q in course.knowledge}
    assert not known & {normalize(u.question) for u in course.unanswerable}


def test_format_prompts_mix(course):
    prompts = course.format_prompts
    assert sum(p.expect_needs_human for p in prompts) >= 6
    assert sum(not p.expect_needs_human for p in prompts) >= 6
    assert any(not p.passages for p in prompts)
    kb_ids = {a.id for a in course.kb_after_update}
    for p in prompts:
        assert all(doc_id.startswith("doc-") and doc_id not in kb_ids for doc_id, _ in p.passages)


_USER_RE = re.compile(r"\A(?:Context:\n(?P<ctx>.*)\n\n)?Question: (?P<q>.*)\Z", re.S)


def _split_user(content: str) -> tuple[str, list[tuple[str, str]]]:
    m = _USER_RE.match(content)
    assert m, content
    passages = []
    if m.group("ctx"):
        for line in m.group("ctx").split("\n"):
            pm = re.match(r"\[(doc-\d+)\] (.*)", line)
            assert pm, line
            passages.append((pm.group(1), pm.group(2)))
    return m.group("q"), passages


@pytest.mark.parametrize("split", ["train", "val"])
def test_finetune_examples_follow_the_prompt_format_and_voice(course, split):
    examples = course.finetune_train if split == "train" else course.finetune_val
    kinds = {k: 0 for k in D.CHAT_KINDS}
    for ex in examples:
        kinds[ex.kind] += 1
        question, passages = _split_user(ex.user)
        assert list(ex.messages[:2]) == chat(question, passages)
        reply = parse_reply(ex.reply)
        assert reply.valid and ex.reply == answer_json(reply.answer, reply.sources, reply.needs_human)
        assert all(voice_checks(reply.answer).values()), (ex.id, reply.answer)
        assert len(reply.answer.split()) < 40 and reply.answer.endswith(SIGN_OFF)
        assert len(" ".join(m["content"] for m in ex.messages).split()) < 200, "keep examples short"
        assert all("lumio" not in text.lower() for _, text in passages), "practice passages, never Lumio facts"
        assert len(passages) <= 3
        if ex.kind == "grounded":
            assert 1 <= len(passages) and len(reply.sources) == 1 and not reply.needs_human
        elif ex.kind == "handoff":
            assert passages and reply.answer == HANDOFF_ANSWER and reply.sources == () and reply.needs_human
        else:
            assert not passages and reply.sources == () and not reply.needs_human
    assert all(kinds.values()), kinds
    assert kinds["grounded"] > kinds["handoff"] > kinds["chitchat"]


def test_finetune_val_is_about_unseen_documents(course):
    def doc_ids(examples):
        return {doc for ex in examples for doc, _ in _split_user(ex.user)[1]}

    assert not doc_ids(course.finetune_train) & doc_ids(course.finetune_val)
    assert not {normalize(_split_user(ex.user)[0]) for ex in course.finetune_val if ex.kind != "chitchat"} & {
        normalize(_split_user(ex.user)[0]) for ex in course.finetune_train}


def test_inject_facts(course):
    by_fact: dict[str, list[D.InjectFactExample]] = {}
    for ex in course.inject_train:
        by_fact.setdefault(ex.fact_id, []).append(ex)
        question, passages = _split_user(ex.user)
        assert not passages and list(ex.messages[:2]) == chat(question)
        reply = parse_reply(ex.reply)
        assert reply.valid and reply.sources == () and reply.needs_human is False
    assert len(by_fact) == 40 and all(len(v) >= 3 for v in by_fact.values())
    kb_text = " ".join(a.text for a in course.kb_after_update)
    for q in course.inject_test:
        replies = " ".join(parse_reply(ex.reply).answer for ex in by_fact[q.fact_id])
        assert matches(replies, q.answers), q.id
        assert normalize(q.question) not in {normalize(_split_user(ex.user)[0]) for ex in by_fact[q.fact_id]}
        if not re.fullmatch(r"[\d,#]+", q.answers[0]):  # a bare number may occur in the KB by chance
            assert not matches(kb_text, q.answers[:1]), f"{q.id}: the injected fact must not be in the KB"


# --------------------------------------------------------------------------- generators


@pytest.mark.parametrize("script,outputs", [
    ("make_finetune.py", ("finetune", ("train.jsonl", "val.jsonl"))),
    ("make_inject_facts.py", ("inject_facts", ("train.jsonl", "test.jsonl", "facts.jsonl"))),
    ("make_splits.py", ("eval", ("splits.jsonl",))),
])
def test_generators_are_deterministic_and_match_shipped_files(tmp_path, script, outputs):
    folder, names = outputs
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}
    runs = []
    for run in ("a", "b"):
        out = tmp_path / run
        target = out / names[0] if len(names) == 1 else out   # a one-file script takes the file's path
        subprocess.run([sys.executable, str(REPO_ROOT / "data" / "scripts" / script), "--out", str(target)],
                       check=True, env=env, capture_output=True)
        runs.append({name: (out / name).read_bytes() for name in names})
    assert runs[0] == runs[1], "two runs must give byte-identical files"
    for name in names:
        assert runs[0][name] == (DATA_DIR / folder / name).read_bytes(), f"{folder}/{name} is out of date"


def test_handoff_share_changes_only_the_training_hand_offs(tmp_path):
    """make_finetune.py --handoff-share (benchmarks/handoff_decision.py) thins out the hand-off chats
    of the training split; validation keeps its mix (its random draws come later, so its passages
    differ), and the result still loads."""
    from ftrag.data import load_finetune

    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}
    script = str(REPO_ROOT / "data" / "scripts" / "make_finetune.py")
    subprocess.run([sys.executable, script, "--out", str(tmp_path), "--handoff-share", "0.05"],
                   check=True, env=env, capture_output=True)
    fewer, shipped = load_finetune("train", tmp_path / "train.jsonl"), load_finetune("train")
    count = lambda rows, kind: sum(e.kind == kind for e in rows)  # noqa: E731
    assert count(fewer, "handoff") < count(shipped, "handoff")
    assert count(fewer, "grounded") == count(shipped, "grounded") and count(fewer, "chitchat") == count(shipped, "chitchat")
    val_fewer, val_shipped = load_finetune("val", tmp_path / "val.jsonl"), load_finetune("val")
    assert all(count(val_fewer, k) == count(val_shipped, k) for k in ("grounded", "handoff", "chitchat"))
    bad = subprocess.run([sys.executable, script, "--out", str(tmp_path / "bad"), "--handoff-share", "1.5"],
                         env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "between 0 and 1" in bad.stderr


# --------------------------------------------------------------------------- the validator rejects bad files

GOOD_Q = {"id": "k001", "question": "How much is Plus?", "answers": ["$4.99"], "article_ids": ["kb-plan-plus"],
          "changes_after_update": False}


def _jsonl(path: Path, *rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def _raises(fn, *args, match: str) -> str:
    with pytest.raises(DataError) as info:
        fn(*args)
    message = str(info.value)
    assert match in message, message
    assert re.search(r"\S+:\d+: .+ \(.+\)$", message), f"not 'file:line: what (fix)': {message}"
    return message


def test_rejects_broken_json(tmp_path):
    path = _jsonl(tmp_path / "bad.jsonl", GOOD_Q, '{"id": "k002", "question": ')
    _raises(D.load_knowledge_questions, path, match="bad.jsonl:2: broken JSON line")


def test_rejects_missing_field(tmp_path):
    row = {k: v for k, v in GOOD_Q.items() if k != "answers"}
    path = _jsonl(tmp_path / "knowledge.jsonl", row)
    _raises(D.load_knowledge_questions, path, match="knowledge.jsonl:1: missing field 'answers'")


def test_rejects_wrong_type(tmp_path):
    path = _jsonl(tmp_path / "knowledge.jsonl", GOOD_Q, {**GOOD_Q, "id": "k002", "answers": "$4.99"})
    _raises(D.load_knowledge_questions, path, match="knowledge.jsonl:2: field 'answers' must be a non-empty list")


def test_rejects_duplicate_id(tmp_path):
    path = _jsonl(tmp_path / "unanswerable.jsonl", {"id": "u001", "question": "a?"}, {"id": "u001", "question": "b?"})
    _raises(D.load_unanswerable, path, match="unanswerable.jsonl:2: duplicate id 'u001', first used on line 1")


def test_rejects_change_without_updated_answers(tmp_path):
    path = _jsonl(tmp_path / "knowledge.jsonl", {**GOOD_Q, "changes_after_update": True})
    _raises(D.load_knowledge_questions, path,
            match="knowledge.jsonl:1: changes_after_update is true but there are no updated_answers")


def test_rejects_empty_file(tmp_path):
    (tmp_path / "format_prompts.jsonl").write_text("\n  \n", encoding="utf-8")
    _raises(D.load_format_prompts, tmp_path / "format_prompts.jsonl", match="format_prompts.jsonl:1: file is empty")
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "kb-empty.md").write_text("", encoding="utf-8")
    _raises(D.load_kb, kb, match="kb-empty.md:1: file is empty")


ARTICLE = """---
id: kb-test
title: A test article
category: products
updated: 2024-01-31
---
# A test article

Some text.
"""


@pytest.mark.parametrize("text,match", [
    ("# No front matter\n\nJust text.\n", "kb-test.md:1: missing front matter"),
    ("---\nid: kb-test\ntitle: T\n", "kb-test.md:1: front matter is not closed"),
    (ARTICLE.replace("title: A test article", "title A test article"), "kb-test.md:3: malformed front matter line"),
    (ARTICLE.replace("id: kb-test", "id: kb-other"), "kb-test.md:2: id 'kb-other' does not match the file name"),
    (ARTICLE.replace("category: products", "category: gadgets"), "kb-test.md:4: unknown category 'gadgets'"),
    (ARTICLE.replace("2024-01-31", "31/01/2024"), "kb-test.md:5: bad date '31/01/2024'"),
    (ARTICLE.replace("2024-01-31", "2024-02-30"), "kb-test.md:5: bad date '2024-02-30'"),
    (ARTICLE.replace("title: A test article\n", ""), "kb-test.md:1: front matter has no 'title'"),
    (ARTICLE.split("# A test")[0], "kb-test.md:7: empty body"),
    (ARTICLE.replace("updated: 2024-01-31", "updated: 2024-01-31\nchange: x"),
     "kb-test.md:6: unknown front matter key 'change'"),
])
def test_rejects_bad_articles(tmp_path, text, match):
    (tmp_path / "kb-test.md").write_text(text, encoding="utf-8")
    _raises(D.load_kb, tmp_path, match=match)


def test_update_needs_change_line(tmp_path):
    (tmp_path / "kb-test.md").write_text(ARTICLE, encoding="utf-8")
    _raises(D.load_kb_updates, tmp_path, match="kb-test.md:1: front matter has no 'change'")


def _chat_row(**overrides):
    messages = chat("Is the pool open?", [("doc-1", "The pool opens at 6:00.")])
    messages.append({"role": "assistant", "content": answer_json("It opens at 6:00 for you. Stay bright!", ["doc-1"])})
    return {"id": "ft-train-0001", "kind": "grounded", "messages": messages, **overrides}


def test_rejects_bad_chat_examples(tmp_path):
    good = _chat_row()
    path = _jsonl(tmp_path / "train.jsonl", good)
    assert D.load_finetune("train", path)[0].kind == "grounded"

    swapped = _chat_row(messages=[good["messages"][1], good["messages"][0], good["messages"][2]])
    _raises(D.load_finetune, "train", _jsonl(tmp_path / "train.jsonl", good, {**swapped, "id": "x"}),
            match="train.jsonl:2: messages must have the roles system, user, assistant")

    prose = _chat_row(messages=good["messages"][:2] + [{"role": "assistant", "content": "Opens at 6."}])
    _raises(D.load_finetune, "train", _jsonl(tmp_path / "train.jsonl", prose),
            match="train.jsonl:1: the assistant message is not valid schema JSON")

    wrong_cite = _chat_row(messages=good["messages"][:2] + [
        {"role": "assistant", "content": answer_json("It opens at 6:00 for you. Stay bright!", ["doc-9"])}])
    _raises(D.load_finetune, "train", _jsonl(tmp_path / "train.jsonl", wrong_cite),
            match="train.jsonl:1: the assistant cites 'doc-9'")

    _raises(D.load_finetune, "train", _jsonl(tmp_path / "train.jsonl", _chat_row(kind="handoff")),
            match="train.jsonl:1: a handoff example must have no sources")


@pytest.fixture()
def data_copy(tmp_path) -> Path:
    """A private copy of data/ to break on purpose."""
    root = tmp_path / "data"
    for sub in ("kb", "kb_updates", "eval", "finetune", "inject_facts"):
        shutil.copytree(DATA_DIR / sub, root / sub)
    return root


def test_copy_of_shipped_data_loads(data_copy):
    assert D.summary(D.load_all(data_copy)) == D.summary(D.load_all())


def _rewrite_first(path: Path, **changes) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[0] = json.dumps({**json.loads(lines[0]), **changes}, ensure_ascii=False)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_rejects_unknown_gold_article_id(data_copy):
    _rewrite_first(data_copy / "eval" / "knowledge.jsonl", article_ids=["kb-does-not-exist"])
    _raises(D.load_all, data_copy, match="knowledge.jsonl:1: k001: unknown article id 'kb-does-not-exist'")


def test_rejects_answer_missing_from_gold_article(data_copy):
    _rewrite_first(data_copy / "eval" / "knowledge.jsonl", answers=["$1234.56"])
    _raises(D.load_all, data_copy, match="knowledge.jsonl:1: k001: answer '$1234.56' does not appear in")


def test_rejects_train_eval_leak(data_copy):
    first_train = json.loads((data_copy / "finetune" / "train.jsonl").read_text().splitlines()[0])
    question = first_train["messages"][1]["content"].split("Question: ")[-1]
    _rewrite_first(data_copy / "eval" / "unanswerable.jsonl", question=question.upper() + "  ")
    message = _raises(D.load_all, data_copy, match="unanswerable.jsonl:1: u001: train/eval leak")
    assert "train.jsonl:1" in message


def test_rejects_inject_test_question_seen_in_training(data_copy):
    train = json.loads((data_copy / "inject_facts" / "train.jsonl").read_text().splitlines()[0])
    question = train["messages"][1]["content"].removeprefix("Question: ")
    _rewrite_first(data_copy / "inject_facts" / "test.jsonl", question=question)
    _raises(D.load_all, data_copy, match="test.jsonl:1: if-test-001: train/eval leak")


def test_inject_fact_statements(course):
    """One statement per fact; several test paraphrases per fact, each answered by its statement."""
    statements = {f.fact_id: f.statement for f in course.inject_facts}
    assert set(statements) == {ex.fact_id for ex in course.inject_train}
    per_fact: dict[str, int] = {}
    for q in course.inject_test:
        per_fact[q.fact_id] = per_fact.get(q.fact_id, 0) + 1
        assert matches(statements[q.fact_id], q.answers), q.id
        assert q.gold_article_ids() == (q.fact_id,) and q.gold_answers(True) == q.answers
    assert min(per_fact.values()) >= 4


def test_rejects_fact_statement_without_the_answer(data_copy):
    _rewrite_first(data_copy / "inject_facts" / "facts.jsonl", statement="The Halo has a codename.")
    _raises(D.load_all, data_copy, match="facts.jsonl:1: the statement of fact-01 states none of the answers "
            "of if-test-001")


def test_rejects_fact_statement_for_unknown_fact(data_copy):
    _rewrite_first(data_copy / "inject_facts" / "facts.jsonl", fact_id="fact-99")
    _raises(D.load_all, data_copy, match="facts.jsonl:1: unknown fact_id 'fact-99'")


def test_rejects_missing_fact_statement(data_copy):
    path = data_copy / "inject_facts" / "facts.jsonl"
    path.write_text("".join(path.read_text().splitlines(keepends=True)[1:]), encoding="utf-8")
    message = _raises(D.load_all, data_copy, match="fact-01 has no statement in ")
    assert re.search(r"inject_facts/train.jsonl:\d+: fact-01 has no statement in \S*facts.jsonl", message)


def test_rejects_stale_answer_in_update(data_copy):
    path = data_copy / "kb_updates" / "kb-plan-plus.md"
    path.write_text(path.read_text() + "\nThe old price was $4.99 per month.\n", encoding="utf-8")
    _raises(D.load_all, data_copy, match="old answer '$4.99' still appears in the updated article")


# --------------------------------------------------------------------------- the dev/test split


def test_split_is_stratified_about_one_third_dev_and_covers_every_question(course):
    dev, test = course.dev, course.test
    for kind in ("knowledge", "unanswerable"):
        all_ids = {q.id for q in getattr(course, kind)}
        dev_ids, test_ids = {q.id for q in getattr(dev, kind)}, {q.id for q in getattr(test, kind)}
        assert not dev_ids & test_ids and dev_ids | test_ids == all_ids
        assert 0.28 <= len(dev_ids) / len(all_ids) <= 0.4, (kind, len(dev_ids), len(all_ids))
    category = {a.id: a.category for a in course.kb}
    for cat in {category[q.article_ids[0]] for q in course.knowledge}:
        for changed in (True, False):
            group = [q for q in course.knowledge if category[q.article_ids[0]] == cat and q.changes_after_update == changed]
            if len(group) >= 3:   # every stratum big enough to split has questions on both sides
                in_dev = sum(q in dev.knowledge for q in group)
                assert 0 < in_dev < len(group), (cat, changed)
    assert len(test.knowledge) >= 60 and len(test.unanswerable) >= 15


def _split_file(tmp_path, course, edit=None):
    rows = [{"id": q.id, "split": "dev" if q in course.dev.knowledge or q in course.dev.unanswerable else "test"}
            for q in [*course.knowledge, *course.unanswerable]]
    rows = edit(rows) if edit else rows
    return _jsonl(tmp_path / "splits.jsonl", *rows)


def test_split_loader_rejects_a_question_in_both_splits(tmp_path, course):
    path = _split_file(tmp_path, course, lambda rows: rows + [{"id": rows[0]["id"], "split": "test"}])
    msg = _raises(D.load_splits, course.knowledge, course.unanswerable, path, match="is in both splits")
    assert "splits.jsonl" in msg


def test_split_loader_rejects_an_unknown_id_and_an_empty_split(tmp_path, course):
    path = _split_file(tmp_path, course, lambda rows: rows + [{"id": "k999", "split": "dev"}])
    _raises(D.load_splits, course.knowledge, course.unanswerable, path, match="unknown question id 'k999'")
    path = _split_file(tmp_path, course, lambda rows: [{**r, "split": "test"} for r in rows])
    _raises(D.load_splits, course.knowledge, course.unanswerable, path, match="the dev split is empty")
    path = _split_file(tmp_path, course, lambda rows: rows[1:])
    _raises(D.load_splits, course.knowledge, course.unanswerable, path, match="in no split")
    path = _split_file(tmp_path, course, lambda rows: [{**rows[0], "split": "train"}, *rows[1:]])
    _raises(D.load_splits, course.knowledge, course.unanswerable, path, match="unknown split 'train'")

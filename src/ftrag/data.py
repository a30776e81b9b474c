"""Load and validate the course data set (``data/``), standard library only.

Every loader returns frozen dataclasses and raises :class:`ftrag.errors.DataError` on the first
problem, with a message of the form ``"<file>:<line>: <what is wrong> (<how to fix>)"``.

* :func:`load_kb` / :func:`load_kb_updates`: the Lumio help-center articles (Markdown with a small
  ``key: value`` front matter) and the later updates to them;
* :func:`apply_updates`: the knowledge base after the update (replaced and added articles);
* :func:`load_knowledge_questions`, :func:`load_unanswerable`, :func:`load_format_prompts`: the
  evaluation sets;
* :func:`load_finetune`: the behaviour fine-tuning chats (``train`` / ``val``);
* :func:`load_inject_facts`: the "fine-tune to inject facts" chats (``train``), questions (``test``)
  and one statement per fact (``facts``: the documents retrieval gets in the controlled comparison);
* :func:`load_all`: everything above, cross-validated (gold article ids exist, gold answers appear in
  their articles, no evaluation question leaks into training data), as one :class:`CourseData`.

Default locations come from :data:`ftrag.paths.DATA_DIR` (override with ``FTRAG_DATA_DIR``).
"""
from __future__ import annotations

import datetime as dt
import functools
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import paths
from .errors import DataError
from .evaluate import normalize, parse_reply
from .prompts import SYSTEM_PROMPT

CATEGORIES = (
    "plans-pricing", "shipping-returns", "account-security", "troubleshooting", "policies", "products",
)
#: The stores an article can be limited to (front matter ``regions: eu, uk``); no ``regions`` line
#: means the article applies to every customer.
REGIONS = ("us", "eu", "uk", "international")
CHAT_ROLES = ("system", "user", "assistant")
CHAT_KINDS = ("grounded", "handoff", "chitchat")
FINETUNE_SPLITS = ("train", "val")
#: Share of the training facts in ``finetune/train.jsonl`` that also get a hand-off chat (the same question
#: without its passage). The pick of ``make bench-handoff`` (results/cpu/sweeps.json, section "training");
#: ``data/scripts/make_finetune.py`` builds the shipped files with it.
FINETUNE_HANDOFF_SHARE = 0.2
INJECT_SPLITS = ("train", "test", "facts")
EVAL_SPLITS = ("dev", "test")

_ID_RE = re.compile(r"^kb-[a-z0-9]+(?:-[a-z0-9]+)*$")
_KEY_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_-]*)\s*:\s*(.*)$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_CONTEXT_ID_RE = re.compile(r"^\[([^\]]+)\] ", re.M)


# =========================================================================== records


@dataclass(frozen=True)
class Article:
    """One help-center article. ``text`` (title + body) is what retrieval indexes."""

    id: str
    title: str
    category: str
    updated: dt.date
    body: str
    path: Path = field(compare=False, repr=False)
    #: the stores (:data:`REGIONS`) whose customers the article applies to; empty: every customer
    regions: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        return f"{self.title}\n\n{self.body}"

    @property
    def n_words(self) -> int:
        return len(self.body.split())


@dataclass(frozen=True)
class ArticleUpdate(Article):
    """An article from ``data/kb_updates``: replaces the article with the same id, or adds a new one."""

    change: str = ""


@dataclass(frozen=True)
class KnowledgeQuestion:
    """A question the knowledge base answers. ``answers`` are accepted short spans (any one counts);
    when ``changes_after_update`` the answer after the update is ``updated_answers``."""

    id: str
    question: str
    answers: tuple[str, ...]
    article_ids: tuple[str, ...]
    changes_after_update: bool = False
    updated_answers: tuple[str, ...] = ()
    updated_article_ids: tuple[str, ...] = ()
    source: str = field(default="", compare=False, repr=False)

    def gold_answers(self, after_update: bool = False) -> tuple[str, ...]:
        return self.updated_answers if (after_update and self.changes_after_update) else self.answers

    def gold_article_ids(self, after_update: bool = False) -> tuple[str, ...]:
        return self.updated_article_ids if (after_update and self.changes_after_update) else self.article_ids


@dataclass(frozen=True)
class UnanswerableQuestion:
    """A plausible support question that nothing in the knowledge base (or its update) answers."""

    id: str
    question: str
    source: str = field(default="", compare=False, repr=False)


@dataclass(frozen=True)
class FormatPrompt:
    """A prompt for checking format and voice: made-up passages (may be empty) and whether the right
    reply is a hand-off (``expect_needs_human``)."""

    id: str
    question: str
    passages: tuple[tuple[str, str], ...]
    expect_needs_human: bool
    source: str = field(default="", compare=False, repr=False)


@dataclass(frozen=True)
class ChatExample:
    """One fine-tuning chat: ``messages`` is (system, user, assistant), each ``{"role", "content"}``."""

    id: str
    kind: str
    messages: tuple[dict[str, str], ...]
    source: str = field(default="", compare=False, repr=False)

    __hash__ = None  # type: ignore[assignment]  # messages hold dicts

    @property
    def user(self) -> str:
        return self.messages[1]["content"]

    @property
    def reply(self) -> str:
        return self.messages[2]["content"]

    def to_messages(self) -> list[dict[str, str]]:
        """A fresh list of plain dicts, ready for a tokenizer's chat template."""
        return [dict(m) for m in self.messages]


@dataclass(frozen=True)
class InjectFactExample:
    """One training chat that states an invented Lumio-internal fact (no passages)."""

    id: str
    fact_id: str
    messages: tuple[dict[str, str], ...]
    source: str = field(default="", compare=False, repr=False)

    __hash__ = None  # type: ignore[assignment]

    @property
    def user(self) -> str:
        return self.messages[1]["content"]

    @property
    def reply(self) -> str:
        return self.messages[2]["content"]

    def to_messages(self) -> list[dict[str, str]]:
        return [dict(m) for m in self.messages]


@dataclass(frozen=True)
class InjectFactQuestion:
    """A test paraphrase for one injected fact, never seen in training."""

    id: str
    fact_id: str
    question: str
    answers: tuple[str, ...]
    source: str = field(default="", compare=False, repr=False)

    # the interface of KnowledgeQuestion, so :func:`ftrag.systems.score` scores these questions too;
    # the "gold article" of a paraphrase is its fact's statement (see InjectFact), never updated
    def gold_answers(self, after_update: bool = False) -> tuple[str, ...]:
        return self.answers

    def gold_article_ids(self, after_update: bool = False) -> tuple[str, ...]:
        return (self.fact_id,)


@dataclass(frozen=True)
class InjectFact:
    """One injected fact stated as a short document: the sentence its training replies state."""

    fact_id: str
    statement: str
    source: str = field(default="", compare=False, repr=False)


@dataclass(frozen=True)
class EvalSplit:
    """One side of the fixed dev/test split of the evaluation questions (``data/eval/splits.jsonl``).

    Settings are chosen on ``dev``; the numbers the chapters quote are measured on ``test``."""

    name: str
    knowledge: tuple[KnowledgeQuestion, ...]
    unanswerable: tuple[UnanswerableQuestion, ...]

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True)
class CourseData:
    """Everything in ``data/``, validated together by :func:`load_all`."""

    kb: tuple[Article, ...]
    kb_updates: tuple[ArticleUpdate, ...]
    kb_after_update: tuple[Article, ...]
    knowledge: tuple[KnowledgeQuestion, ...]
    unanswerable: tuple[UnanswerableQuestion, ...]
    format_prompts: tuple[FormatPrompt, ...]
    finetune_train: tuple[ChatExample, ...]
    finetune_val: tuple[ChatExample, ...]
    inject_train: tuple[InjectFactExample, ...]
    inject_test: tuple[InjectFactQuestion, ...]
    data_dir: Path = field(compare=False, repr=False, default=Path("data"))
    splits: tuple[EvalSplit, ...] = field(default=(), repr=False)
    inject_facts: tuple[InjectFact, ...] = field(default=(), repr=False)

    __hash__ = None  # type: ignore[assignment]

    def split(self, name: str) -> EvalSplit:
        """The ``dev`` or ``test`` questions (see :func:`load_splits`)."""
        for s in self.splits:
            if s.name == name:
                return s
        raise DataError(f"no evaluation split named {name!r}; the splits are {', '.join(EVAL_SPLITS)} "
                        "(data/eval/splits.jsonl, written by data/scripts/make_splits.py)")

    @property
    def dev(self) -> EvalSplit:
        """Questions for choosing settings. Code that picks a setting reads only these."""
        return self.split("dev")

    @property
    def test(self) -> EvalSplit:
        """Questions for reporting. Never tune on them."""
        return self.split("test")

    def articles(self, after_update: bool = False) -> tuple[Article, ...]:
        return self.kb_after_update if after_update else self.kb

    def article(self, article_id: str, after_update: bool = False) -> Article:
        for art in self.articles(after_update):
            if art.id == article_id:
                return art
        raise KeyError(article_id)


# =========================================================================== helpers


def _data_dir() -> Path:
    return Path(paths.DATA_DIR)


@functools.lru_cache(maxsize=256)
def _show(path: Path) -> str:
    """A path as the error message shows it: relative to the repository when inside it."""
    path = Path(path)
    for root in (_data_dir().parent, Path.cwd()):
        try:
            return str(path.resolve().relative_to(root.resolve()))
        except (ValueError, OSError):
            continue
    return str(path)


def _error(path: Path, line: int, what: str, fix: str) -> DataError:
    return DataError(f"{_show(path)}:{line}: {what} ({fix})")


def _read_text(path: Path) -> str:
    path = Path(path)
    if not path.is_file():
        raise _error(path, 1, "file not found", "check the path, or regenerate the file with its script "
                     "in data/scripts/; see data/README.md")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise _error(path, 1, f"not UTF-8 text ({exc.reason})", "save the file as UTF-8") from None
    if not text.strip():
        raise _error(path, 1, "file is empty", "add content, or restore it with git checkout")
    return text


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    text = _read_text(path)
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _error(path, lineno, f"broken JSON line: {exc.msg} at column {exc.colno}",
                         "write exactly one complete JSON object per line") from None
        if not isinstance(obj, dict):
            raise _error(path, lineno, f"expected a JSON object, got {type(obj).__name__}",
                         "write one {...} object per line")
        yield lineno, obj


class _Record:
    """Field access for one JSONL record that turns every problem into a DataError."""

    def __init__(self, path: Path, line: int, obj: dict[str, Any], required: Sequence[str],
                 optional: Sequence[str] = ()) -> None:
        self.path, self.line, self.obj = path, line, obj
        unknown = sorted(set(obj) - set(required) - set(optional))
        if unknown:
            raise self.error(f"unknown field {unknown[0]!r}",
                             f"allowed fields: {', '.join(list(required) + list(optional))}")
        for key in required:
            if key not in obj:
                raise self.error(f"missing field {key!r}", f"every record needs: {', '.join(required)}")

    @property
    def where(self) -> str:
        return f"{_show(self.path)}:{self.line}"

    def error(self, what: str, fix: str) -> DataError:
        return _error(self.path, self.line, what, fix)

    def text(self, key: str) -> str:
        value = self.obj.get(key)
        if not isinstance(value, str) or not value.strip():
            raise self.error(f"field {key!r} must be a non-empty string, got {value!r:.60}",
                             f'write "{key}": "..."')
        return value

    def flag(self, key: str, default: bool | None = None) -> bool:
        if key not in self.obj and default is not None:
            return default
        value = self.obj.get(key)
        if not isinstance(value, bool):
            raise self.error(f"field {key!r} must be true or false, got {value!r:.60}",
                             f'write "{key}": true or "{key}": false')
        return value

    def texts(self, key: str, allow_empty: bool = False) -> tuple[str, ...]:
        value = self.obj.get(key, [])
        if (not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value)
                or (not value and not allow_empty)):
            what = "a non-empty list of non-empty strings" if not allow_empty else "a list of strings"
            raise self.error(f"field {key!r} must be {what}, got {value!r:.60}", f'write "{key}": ["...", ...]')
        return tuple(value)


def _check_unique(path: Path, items: Iterable[tuple[str, int]]) -> None:
    seen: dict[str, int] = {}
    for item_id, line in items:
        if item_id in seen:
            raise _error(path, line, f"duplicate id {item_id!r}, first used on line {seen[item_id]}",
                         "give every record its own id")
        seen[item_id] = line


# =========================================================================== articles


def _parse_article(path: Path, *, is_update: bool) -> Article:
    text = _read_text(path)
    lines = text.splitlines()
    fm_help = "start the file with a '---' line, then 'key: value' lines (id, title, category, updated" + (
        ", change" if is_update else "") + "), then a closing '---' line"
    if lines[0].strip() != "---":
        raise _error(path, 1, "missing front matter", fm_help)
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
    except StopIteration:
        raise _error(path, 1, "front matter is not closed", "add a '---' line after the 'key: value' lines") from None
    meta: dict[str, tuple[str, int]] = {}
    for i in range(1, end):
        raw = lines[i]
        if not raw.strip():
            continue
        m = _KEY_RE.match(raw.strip())
        if not m:
            raise _error(path, i + 1, f"malformed front matter line {raw.strip()!r:.60}",
                         "use one 'key: value' per line")
        key, value = m.group(1), m.group(2).strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        if key in meta:
            raise _error(path, i + 1, f"front matter key {key!r} appears twice", "keep only one")
        meta[key] = (value, i + 1)
    required = ("id", "title", "category", "updated") + (("change",) if is_update else ())
    for key in meta:
        if key not in required and key != "regions":
            fix = ("'change' is only allowed in data/kb_updates" if key == "change"
                   else f"allowed keys: {', '.join(required)}, regions")
            raise _error(path, meta[key][1], f"unknown front matter key {key!r}", fix)
    for key in required:
        if key not in meta:
            raise _error(path, 1, f"front matter has no {key!r}", f"add a '{key}: ...' line to the front matter")
        if not meta[key][0]:
            raise _error(path, meta[key][1], f"front matter {key!r} is empty", f"write '{key}: <value>'")
    art_id, id_line = meta["id"]
    if art_id != path.stem:
        raise _error(path, id_line, f"id {art_id!r} does not match the file name {path.name!r}",
                     f"rename the file to {art_id}.md or set 'id: {path.stem}'")
    if not _ID_RE.match(art_id):
        raise _error(path, id_line, f"id {art_id!r} is not a kb- slug",
                     "use lower-case letters, digits and dashes, starting with 'kb-'")
    category, cat_line = meta["category"]
    if category not in CATEGORIES:
        raise _error(path, cat_line, f"unknown category {category!r}", f"use one of: {', '.join(CATEGORIES)}")
    date_text, date_line = meta["updated"]
    try:
        if not _DATE_RE.match(date_text):
            raise ValueError
        updated = dt.date.fromisoformat(date_text)
    except ValueError:
        raise _error(path, date_line, f"bad date {date_text!r}", "write the date as YYYY-MM-DD") from None
    regions: tuple[str, ...] = ()
    if "regions" in meta:
        text_regions, regions_line = meta["regions"]
        regions = tuple(r.strip() for r in text_regions.split(","))
        unknown = [r for r in regions if r not in REGIONS]
        if not text_regions or unknown or len(set(regions)) != len(regions):
            raise _error(path, regions_line, f"bad regions {text_regions!r}",
                         f"list distinct stores from {', '.join(REGIONS)}, comma-separated (e.g. 'regions: eu, uk'), "
                         "or drop the line for an article that applies to every customer")
    body = "\n".join(lines[end + 1:]).strip()
    if not body:
        raise _error(path, end + 2, "empty body", "write the article text below the closing '---'")
    common = dict(id=art_id, title=meta["title"][0], category=category, updated=updated, body=body, path=path,
                  regions=regions)
    if is_update:
        return ArticleUpdate(**common, change=meta["change"][0])
    return Article(**common)


def _load_articles(folder: Path, is_update: bool) -> list:
    folder = Path(folder)
    if not folder.is_dir():
        raise _error(folder, 1, "folder not found", "check the path; see data/README.md")
    files = sorted(folder.glob("*.md"))
    if not files:
        raise _error(folder, 1, "no articles (*.md files) in this folder", "add <id>.md files; see data/README.md")
    return [_parse_article(p, is_update=is_update) for p in files]


def load_kb(dir: Path | str | None = None) -> list[Article]:
    """The help-center articles in ``data/kb`` (sorted by id)."""
    return _load_articles(Path(dir) if dir else _data_dir() / "kb", is_update=False)


def load_kb_updates(dir: Path | str | None = None) -> list[ArticleUpdate]:
    """The article updates in ``data/kb_updates`` (sorted by id)."""
    return _load_articles(Path(dir) if dir else _data_dir() / "kb_updates", is_update=True)


def apply_updates(kb: Sequence[Article], updates: Sequence[Article]) -> list[Article]:
    """The knowledge base after the update: an update with a known id replaces that article in
    place; an update with a new id is added at the end (in the order given)."""
    by_id = {u.id: u for u in updates}
    known = {a.id for a in kb}
    result = [by_id.get(a.id, a) for a in kb]
    result += [u for u in updates if u.id not in known]
    return result


# =========================================================================== eval sets


def load_knowledge_questions(path: Path | str | None = None) -> list[KnowledgeQuestion]:
    """``data/eval/knowledge.jsonl``."""
    path = Path(path) if path else _data_dir() / "eval" / "knowledge.jsonl"
    out, ids = [], []
    for line, obj in _read_jsonl(path):
        rec = _Record(path, line, obj, ("id", "question", "answers", "article_ids", "changes_after_update"),
                      ("updated_answers", "updated_article_ids"))
        changes = rec.flag("changes_after_update")
        if changes:
            if "updated_answers" not in obj:
                raise rec.error("changes_after_update is true but there are no updated_answers",
                                "add \"updated_answers\": [...] with the answer after the update")
            new_answers = rec.texts("updated_answers")
            new_ids = rec.texts("updated_article_ids") if "updated_article_ids" in obj else rec.texts(
                "article_ids")
        else:
            for key in ("updated_answers", "updated_article_ids"):
                if obj.get(key):
                    raise rec.error(f"{key} given but changes_after_update is false",
                                    f"set changes_after_update to true or remove {key}")
            new_answers, new_ids = (), ()
        out.append(KnowledgeQuestion(
            id=rec.text("id"), question=rec.text("question"), answers=rec.texts("answers"),
            article_ids=rec.texts("article_ids"), changes_after_update=changes,
            updated_answers=new_answers, updated_article_ids=new_ids, source=rec.where))
        ids.append((out[-1].id, line))
    _check_unique(path, ids)
    return out


def load_unanswerable(path: Path | str | None = None) -> list[UnanswerableQuestion]:
    """``data/eval/unanswerable.jsonl``."""
    path = Path(path) if path else _data_dir() / "eval" / "unanswerable.jsonl"
    out, ids = [], []
    for line, obj in _read_jsonl(path):
        rec = _Record(path, line, obj, ("id", "question"))
        out.append(UnanswerableQuestion(id=rec.text("id"), question=rec.text("question"), source=rec.where))
        ids.append((out[-1].id, line))
    _check_unique(path, ids)
    return out


def load_splits(knowledge: Sequence[KnowledgeQuestion], unanswerable: Sequence[UnanswerableQuestion],
                path: Path | str | None = None) -> tuple[EvalSplit, ...]:
    """``data/eval/splits.jsonl``: one ``{"id": ..., "split": "dev"|"test"}`` line per evaluation
    question. Every knowledge and unanswerable question must be in exactly one split, and neither
    split may be empty."""
    path = Path(path) if path else _data_dir() / "eval" / "splits.jsonl"
    questions = {q.id: q for q in [*knowledge, *unanswerable]}
    remake = "regenerate it with `PYTHONPATH=src python data/scripts/make_splits.py`"
    assigned: dict[str, tuple[str, int]] = {}
    for line, obj in _read_jsonl(path):
        rec = _Record(path, line, obj, ("id", "split"))
        qid, name = rec.text("id"), rec.text("split")
        if name not in EVAL_SPLITS:
            raise rec.error(f"unknown split {name!r}", f"use one of {', '.join(EVAL_SPLITS)}")
        if qid not in questions:
            raise rec.error(f"unknown question id {qid!r} (not in knowledge.jsonl or unanswerable.jsonl)",
                            f"remove the line or fix the id; or {remake}")
        if qid in assigned:
            first_split, first_line = assigned[qid]
            where = "both splits" if first_split != name else f"{name} twice"
            raise rec.error(f"question {qid!r} is in {where} (first on line {first_line})",
                            "keep one line per question: a question is either dev or test")
        assigned[qid] = (name, line)
    missing = [qid for qid in questions if qid not in assigned]
    if missing:
        raise _error(path, 1, f"{len(missing)} question(s) in no split, e.g. {missing[0]!r}",
                     f"add a line for each, or {remake}")
    out = []
    for name in EVAL_SPLITS:
        ids = {qid for qid, (s, _) in assigned.items() if s == name}
        if not ids:
            raise _error(path, 1, f"the {name} split is empty", f"put about a third of the questions in dev; {remake}")
        out.append(EvalSplit(name, tuple(q for q in knowledge if q.id in ids),
                             tuple(q for q in unanswerable if q.id in ids)))
    return tuple(out)


def _passages(rec: _Record, key: str) -> tuple[tuple[str, str], ...]:
    value = rec.obj.get(key)
    ok = isinstance(value, list) and all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) and x.strip() for x in p) for p in value)
    if not ok:
        raise rec.error(f"field {key!r} must be a list of [id, text] pairs, got {value!r:.60}",
                        f'write "{key}": [["doc-1", "text"], ...] or []')
    return tuple((p[0], p[1]) for p in value)


def load_format_prompts(path: Path | str | None = None) -> list[FormatPrompt]:
    """``data/eval/format_prompts.jsonl``."""
    path = Path(path) if path else _data_dir() / "eval" / "format_prompts.jsonl"
    out, ids = [], []
    for line, obj in _read_jsonl(path):
        rec = _Record(path, line, obj, ("id", "question", "passages", "expect_needs_human"))
        out.append(FormatPrompt(id=rec.text("id"), question=rec.text("question"), passages=_passages(rec, "passages"),
                                expect_needs_human=rec.flag("expect_needs_human"), source=rec.where))
        ids.append((out[-1].id, line))
    _check_unique(path, ids)
    return out


# =========================================================================== training chats


def _messages(rec: _Record) -> tuple[dict[str, str], ...]:
    value = rec.obj.get("messages")
    roles = [m.get("role") if isinstance(m, dict) else None for m in value] if isinstance(value, list) else None
    if roles != list(CHAT_ROLES):
        raise rec.error(f"messages must have the roles system, user, assistant in that order, got {roles}",
                        "build them with ftrag.prompts.chat(question, passages) plus one assistant message")
    for m in value:
        if set(m) != {"role", "content"} or not isinstance(m["content"], str) or not m["content"].strip():
            raise rec.error(f"the {m.get('role')} message must be {{\"role\", \"content\"}} with non-empty text",
                            "build the messages with ftrag.prompts.chat()")
    if value[0]["content"] != SYSTEM_PROMPT:
        raise rec.error("the system message is not ftrag.prompts.SYSTEM_PROMPT",
                        "regenerate the file with its script in data/scripts/")
    reply = parse_reply(value[2]["content"])
    if not reply.valid:
        raise rec.error(f"the assistant message is not valid schema JSON: {reply.problem}",
                        "serialise it with ftrag.prompts.answer_json(answer, sources, needs_human)")
    cited = set(_CONTEXT_ID_RE.findall(value[1]["content"]))
    missing = [s for s in reply.sources if s not in cited]
    if missing:
        raise rec.error(f"the assistant cites {missing[0]!r}, which is not a passage in the user message",
                        "cite only ids of passages in the Context block")
    return tuple(dict(m) for m in value)


def load_finetune(split: str, path: Path | str | None = None) -> list[ChatExample]:
    """``data/finetune/<split>.jsonl`` with ``split`` in ``('train', 'val')``."""
    if split not in FINETUNE_SPLITS:
        raise ValueError(f"unknown fine-tuning split {split!r}; use one of {FINETUNE_SPLITS}")
    path = Path(path) if path else _data_dir() / "finetune" / f"{split}.jsonl"
    out, ids = [], []
    for line, obj in _read_jsonl(path):
        rec = _Record(path, line, obj, ("id", "kind", "messages"))
        kind = rec.text("kind")
        if kind not in CHAT_KINDS:
            raise rec.error(f"unknown kind {kind!r}", f"use one of: {', '.join(CHAT_KINDS)}")
        messages = _messages(rec)
        reply = parse_reply(messages[2]["content"])
        expected = {"grounded": (True, False), "handoff": (False, True), "chitchat": (False, False)}[kind]
        if (bool(reply.sources), reply.needs_human) != expected:
            raise rec.error(f"a {kind} example must have {'some' if expected[0] else 'no'} sources and "
                            f"needs_human={str(expected[1]).lower()}", "fix the kind or the reply")
        out.append(ChatExample(id=rec.text("id"), kind=kind, messages=messages, source=rec.where))
        ids.append((out[-1].id, line))
    _check_unique(path, ids)
    return out


def load_inject_facts(split: str, path: Path | str | None = None) -> list[InjectFactExample] | list[InjectFactQuestion] | list[InjectFact]:
    """``data/inject_facts/train.jsonl`` (chats), ``test.jsonl`` (paraphrased questions) or
    ``facts.jsonl`` (one statement per fact)."""
    if split not in INJECT_SPLITS:
        raise ValueError(f"unknown inject-facts split {split!r}; use one of {INJECT_SPLITS}")
    path = Path(path) if path else _data_dir() / "inject_facts" / f"{split}.jsonl"
    out: list = []
    ids = []
    for line, obj in _read_jsonl(path):
        if split == "facts":
            rec = _Record(path, line, obj, ("fact_id", "statement"))
            out.append(InjectFact(fact_id=rec.text("fact_id"), statement=rec.text("statement"), source=rec.where))
            ids.append((out[-1].fact_id, line))
            continue
        if split == "train":
            rec = _Record(path, line, obj, ("id", "fact_id", "messages"))
            messages = _messages(rec)
            out.append(InjectFactExample(id=rec.text("id"), fact_id=rec.text("fact_id"), messages=messages,
                                         source=rec.where))
        else:
            rec = _Record(path, line, obj, ("id", "fact_id", "question", "answers"))
            out.append(InjectFactQuestion(id=rec.text("id"), fact_id=rec.text("fact_id"), question=rec.text("question"),
                                          answers=rec.texts("answers"), source=rec.where))
        ids.append((out[-1].id, line))
    _check_unique(path, ids)
    return out


# =========================================================================== cross-validation


def _source_error(source: str, what: str, fix: str) -> DataError:
    return DataError(f"{source}: {what} ({fix})")


def _check_knowledge(questions: Sequence[KnowledgeQuestion], kb: Sequence[Article],
                     after: Sequence[Article], kb_dir: str) -> None:
    before_by_id = {a.id: a for a in kb}
    after_by_id = {a.id: a for a in after}
    norm_before = {a.id: f" {normalize(a.text)} " for a in kb}
    norm_after = {a.id: norm_before[a.id] if a is before_by_id.get(a.id) else f" {normalize(a.text)} " for a in after}

    def appears(variant: str, article_ids: Sequence[str], norm: dict[str, str]) -> bool:
        needle = f" {normalize(variant)} "
        return needle.strip() != "" and any(needle in norm[a] for a in article_ids)

    for q in questions:
        checks = (("article_ids", q.article_ids, before_by_id, kb_dir),
                  ("updated_article_ids", q.updated_article_ids, after_by_id, f"{kb_dir} or kb_updates"))
        for key, ids, pool, where in checks:
            for aid in ids:
                if aid not in pool:
                    raise _source_error(q.source, f"{q.id}: unknown article id {aid!r} in {key}",
                                        f"use the id of an article in {where}")
        for variant in q.answers:
            if not appears(variant, q.article_ids, norm_before):
                raise _source_error(q.source, f"{q.id}: answer {variant!r} does not appear in "
                                    f"{', '.join(q.article_ids)}",
                                    "copy the answer span from the gold article, or fix article_ids")
        if not q.changes_after_update:
            for variant in q.answers:
                if not appears(variant, q.article_ids, norm_after):
                    raise _source_error(q.source, f"{q.id}: answer {variant!r} disappears from "
                                        f"{', '.join(q.article_ids)} after the update",
                                        "set changes_after_update with updated_answers, or fix the update")
            continue
        for variant in q.updated_answers:
            if not appears(variant, q.updated_article_ids, norm_after):
                raise _source_error(q.source, f"{q.id}: updated answer {variant!r} does not appear in "
                                    f"{', '.join(q.updated_article_ids)} after the update",
                                    "copy the span from the updated article")
            if appears(variant, q.article_ids, norm_before):
                raise _source_error(q.source, f"{q.id}: updated answer {variant!r} already appears in the old "
                                    "article", "pick spans that tell the old and new answer apart")
        for variant in q.answers:
            if appears(variant, q.updated_article_ids, norm_after):
                raise _source_error(q.source, f"{q.id}: old answer {variant!r} still appears in the updated "
                                    "article", "remove the stale value from the update, or pick a tighter span")


class _Haystack:
    """Normalised training user messages, searchable for whole-phrase containment in one pass."""

    SEP = " \x00 "  # normalize() never produces NUL, so no match can straddle two messages

    def __init__(self, examples: Iterable[ChatExample | InjectFactExample]) -> None:
        self.items = [(ex.source, f" {normalize(ex.user)} ") for ex in examples]
        self.big = self.SEP + self.SEP.join(text for _, text in self.items) + self.SEP

    def find(self, question: str) -> str | None:
        needle = f" {normalize(question)} "
        if not needle.strip() or needle not in self.big:
            return None
        return next(src for src, text in self.items if needle in text)


def check_leaks(eval_sets: Iterable[Iterable[Any]], training: Iterable[ChatExample | InjectFactExample]) -> None:
    """Raise DataError when an evaluation question (normalised) appears inside a training user
    message, so evaluation never measures memorised prompts."""
    hay = _Haystack(training)
    for items in eval_sets:
        for item in items:
            hit = hay.find(item.question)
            if hit:
                raise _source_error(item.source, f"{item.id}: train/eval leak: the question also appears in the "
                                    f"training message at {hit}",
                                    "rephrase the evaluation question or drop that training example")


def _check_fact_statements(facts: Sequence[InjectFact], test: Sequence[InjectFactQuestion],
                           train: Sequence[InjectFactExample], where: str) -> None:
    """Every fact trained on has exactly one statement, and the statement states an accepted answer
    of each of its test paraphrases (otherwise retrieving it could not answer them)."""
    from .evaluate import matches

    by_fact = {f.fact_id: f for f in facts}
    trained = {ex.fact_id: ex for ex in reversed(train)}   # the first training example of each fact
    for f in facts:
        if f.fact_id not in trained:
            raise _source_error(f.source, f"unknown fact_id {f.fact_id!r} (no training example states it)",
                                "use a fact_id from inject_facts/train.jsonl, or delete the line")
    for fact_id in sorted(set(trained) - set(by_fact)):
        raise _source_error(trained[fact_id].source, f"{fact_id} has no statement in {where}",
                            'add a line {"fact_id": ..., "statement": ...}: run data/scripts/make_inject_facts.py')
    for q in test:
        fact = by_fact[q.fact_id]
        if not matches(fact.statement, q.answers):
            raise _source_error(fact.source, f"the statement of {q.fact_id} states none of the answers of {q.id} "
                                f"({', '.join(q.answers)})", "state the fact with one of its accepted answers")


def load_all(data_dir: Path | str | None = None) -> CourseData:
    """Load every set from ``data_dir`` (default :data:`ftrag.paths.DATA_DIR`) and cross-validate."""
    root = Path(data_dir) if data_dir else _data_dir()
    kb = load_kb(root / "kb")
    updates = load_kb_updates(root / "kb_updates")
    after = apply_updates(kb, updates)
    knowledge = load_knowledge_questions(root / "eval" / "knowledge.jsonl")
    unanswerable = load_unanswerable(root / "eval" / "unanswerable.jsonl")
    format_prompts = load_format_prompts(root / "eval" / "format_prompts.jsonl")
    ft_train = load_finetune("train", root / "finetune" / "train.jsonl")
    ft_val = load_finetune("val", root / "finetune" / "val.jsonl")
    inj_train = load_inject_facts("train", root / "inject_facts" / "train.jsonl")
    inj_test = load_inject_facts("test", root / "inject_facts" / "test.jsonl")
    inj_facts = load_inject_facts("facts", root / "inject_facts" / "facts.jsonl")

    _check_knowledge(knowledge, kb, after, _show(root / "kb"))
    seen: dict[str, str] = {}
    for ex in [*ft_train, *ft_val]:
        if ex.id in seen:
            raise _source_error(ex.source, f"duplicate id {ex.id!r}, also used at {seen[ex.id]}",
                                "give every fine-tuning example its own id")
        seen[ex.id] = ex.source
    fact_ids = {ex.fact_id for ex in inj_train}
    for q in inj_test:
        if q.fact_id not in fact_ids:
            raise _source_error(q.source, f"{q.id}: unknown fact_id {q.fact_id!r} (no training example states it)",
                                "use a fact_id from inject_facts/train.jsonl")
    _check_fact_statements(inj_facts, inj_test, inj_train, _show(root / "inject_facts" / "facts.jsonl"))
    check_leaks([knowledge, unanswerable, format_prompts, inj_test], [*ft_train, *ft_val, *inj_train])
    splits = load_splits(knowledge, unanswerable, root / "eval" / "splits.jsonl")

    return CourseData(
        kb=tuple(kb), kb_updates=tuple(updates), kb_after_update=tuple(after), knowledge=tuple(knowledge),
        unanswerable=tuple(unanswerable), format_prompts=tuple(format_prompts), finetune_train=tuple(ft_train),
        finetune_val=tuple(ft_val), inject_train=tuple(inj_train), inject_test=tuple(inj_test), data_dir=root,
        splits=splits, inject_facts=tuple(inj_facts),
    )


def summary(data: CourseData) -> dict[str, int]:
    """How many records each set holds."""
    return {
        "kb_articles": len(data.kb),
        "kb_updates": len(data.kb_updates),
        "kb_articles_after_update": len(data.kb_after_update),
        "knowledge_questions": len(data.knowledge),
        "knowledge_changed_by_update": sum(q.changes_after_update for q in data.knowledge),
        "unanswerable_questions": len(data.unanswerable),
        **{f"{s.name}_{kind}": len(getattr(s, kind)) for s in data.splits for kind in ("knowledge", "unanswerable")},
        "format_prompts": len(data.format_prompts),
        "finetune_train": len(data.finetune_train),
        "finetune_val": len(data.finetune_val),
        "inject_facts": len({ex.fact_id for ex in data.inject_train}),
        "inject_train": len(data.inject_train),
        "inject_test": len(data.inject_test),
        "inject_statements": len(data.inject_facts),
    }


__all__ = [
    "Article", "ArticleUpdate", "KnowledgeQuestion", "UnanswerableQuestion", "FormatPrompt", "ChatExample",
    "InjectFactExample", "InjectFactQuestion", "InjectFact", "CourseData", "EvalSplit", "EVAL_SPLITS", "load_splits", "CATEGORIES", "load_kb", "load_kb_updates",
    "apply_updates", "load_knowledge_questions", "load_unanswerable", "load_format_prompts", "load_finetune",
    "load_inject_facts", "load_all", "check_leaks", "summary",
]

"""Replies the course ships with its repository, so a clean clone runs the labs without generating them.

A course-specific speed-up, named as such. On the cpu profile about 900 replies take some 13 of the
labs' 20 minutes on 2 cores, and decoding is greedy: the same weights and the same prompt give the
same reply. So the course commits the replies its own machine generated for the labs, in the format of
the local reply cache (``results/<profile>/replies/<cache tag>.jsonl``, one ``{"key", "text", ...}``
row per prompt), and :class:`ftrag.generation.Generator` reads them before it generates:

- a reply is reused only under the same cache tag (the same model, or the adapter with the same
  weight hash, the same generation code and constraint) and the same prompt and token limit; any
  other prompt, a changed setting or an adapter trained to different weights is generated as usual;
- the timings stored with a shipped reply are those of the course's machine when it generated it;
- ``FTRAG_SHIPPED_REPLIES=0`` ignores them, and every lab then generates its own replies;
- each lab's last cell prints how many replies came from here, from the local cache and from the model.

``make replies`` regenerates the folder: it runs the labs with an empty cache and this switch off,
then :func:`ship` copies what they generated.
"""
from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from dataclasses import MISSING, fields
from pathlib import Path

from .errors import CourseError, DataError
from .paths import REPO_ROOT

ENV = "FTRAG_SHIPPED_REPLIES"

#: Where this process's replies came from: ``shipped``, ``cached`` (the local ``.cache``) or
#: ``generated``. A lab's last cell reports it (:func:`summary`).
SOURCES: Counter = Counter()


def folder(profile_name: str) -> Path:
    """``results/<profile>/replies``: committed with the course, never written by a lab."""
    return REPO_ROOT / "results" / profile_name / "replies"


def enabled() -> bool:
    """Whether generators read the shipped replies (``FTRAG_SHIPPED_REPLIES`` unset or ``1``)."""
    value = os.environ.get(ENV, "1").strip().lower()
    if value in {"1", "true", "yes", "on", ""}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise CourseError(f"{ENV}={value!r} is not understood: set it to 1 (use the replies shipped with the "
                      "course, the default) or 0 (generate every reply on this machine).")


def read(path: Path) -> dict[str, dict]:
    """The rows of one shipped file by key. A malformed row is an error: unlike the local cache,
    where a torn last line is regenerated, a shipped file is committed and must be whole."""
    from .generation import Generation  # here: ftrag.generation imports this module

    # the key, and every field of a Generation that has no default
    required = ("key", *(f.name for f in fields(Generation) if f.default is MISSING))
    rows: dict[str, dict] = {}
    fix = f"run `make replies` to regenerate it, or delete {path.name} to generate those replies here"
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            row = json.loads(line)
        except ValueError as err:
            raise DataError(f"{path}:{number}: not a JSON object ({err.msg}); {fix}") from None
        missing = [f for f in required if not isinstance(row, dict) or f not in row]
        if missing:
            raise DataError(f"{path}:{number}: a shipped reply without {', '.join(missing)}; {fix}")
        rows[row["key"]] = row
    return rows


def ship(generations_dir: Path, profile_name: str, target: Path | None = None) -> list[Path]:
    """Replace ``target`` (default ``folder(profile_name)``) with the profile's reply-cache files in ``generations_dir``
    (a ``.cache/generations`` that the labs filled), each row checked and the rows sorted by key so a
    re-run that gives the same replies leaves git with nothing to commit."""
    sources = sorted(Path(generations_dir).glob(f"{profile_name}-*.jsonl"))
    if not sources:
        raise CourseError(f"{generations_dir} holds no {profile_name}-*.jsonl reply files: run the labs with "
                          f"FTRAG_CACHE_DIR pointing to an empty folder and {ENV}=0 first (`make replies` does).")
    target = folder(profile_name) if target is None else Path(target)
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    written = []
    for source in sources:
        rows = read(source)
        out = target / source.name
        out.write_text("".join(json.dumps(rows[k], ensure_ascii=False, sort_keys=True) + "\n" for k in sorted(rows)),
                       encoding="utf-8")
        written.append(out)
    return written


def summary(counts: Counter | None = None) -> str:
    """One line for a lab's last cell: where this notebook's replies came from."""
    counts = SOURCES if counts is None else counts
    line = (f"replies in this notebook: {counts['shipped']} shipped with the course, "
            f"{counts['cached']} from this machine's cache, {counts['generated']} generated now")
    if counts["generated"] and counts["shipped"]:
        line += (" (a shipped reply is reused only for the same weights and prompt: an adapter trained on another "
                 "CPU can differ in its last bits, and a changed setting asks new prompts)")
    elif not enabled():
        line += f" ({ENV}=0: the shipped replies are ignored)"
    return line


def main(argv: list[str] | None = None) -> int:
    """``python -m ftrag.shipped_replies <generations dir> [profile]``: :func:`ship` from the command line."""
    import sys

    args = sys.argv[1:] if argv is None else argv
    if not 1 <= len(args) <= 2:
        print("usage: python -m ftrag.shipped_replies <a .cache/generations folder> [profile, default cpu]")
        return 2
    try:
        written = ship(Path(args[0]), args[1] if len(args) == 2 else "cpu")
    except CourseError as err:
        print(f"error: {err}")
        return 1
    for path in written:
        print(f"{path.relative_to(REPO_ROOT)}: {sum(1 for _ in path.open(encoding='utf-8'))} replies")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

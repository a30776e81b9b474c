"""The published site: the strict book build, then headless Chromium against the built pages.

Stages (see ``conftest.py``): ``test_book_builds`` (marker ``book``) runs the strict build
``jupyter-book build . -W -n --keep-going``; the ``browser`` tests serve ``_build/html`` on
127.0.0.1 and drive Debian's Chromium through Selenium, fully offline (every host other than
127.0.0.1 is unresolvable for the browser, so CDN scripts such as MathJax fail on purpose and are
reported, not counted as errors).

Environment:

* ``FTRAG_SITE_DIR``: test this already-built site instead of building one (``make test`` can
  build once and reuse it).
* ``FTRAG_REQUIRE_BROWSER=1`` (set by CI): a missing Chromium/chromedriver is a failure, not a
  skip.
* ``FTRAG_CHROMIUM`` / ``FTRAG_CHROMEDRIVER``: other browser/driver paths (default: Debian's
  ``/usr/bin/chromium`` and ``/usr/bin/chromedriver``).
"""
from __future__ import annotations

import functools
import html
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("FTRAG_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("FTRAG_CHROMEDRIVER", "/usr/bin/chromedriver")
INSTALL_HINT = "apt-get install chromium chromium-driver"
SOURCE_SUFFIXES = (".md", ".ipynb", ".rst")
SEARCH_TERM = "LoRA"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp")


# --------------------------------------------------------------------------------------------
# What the site should contain: _toc.yml and _config.yml
# --------------------------------------------------------------------------------------------
def _config() -> dict:
    return yaml.safe_load((REPO / "_config.yml").read_text(encoding="utf8")) or {}


def _toc_docnames() -> list[str]:
    """Root first, then every ``file`` of _toc.yml in reading order (parts, chapters, sections)."""
    toc = yaml.safe_load((REPO / "_toc.yml").read_text(encoding="utf8"))
    names: list[str] = []

    def add(name):
        name = str(name).strip("/")
        for suffix in SOURCE_SUFFIXES:
            if name.endswith(suffix):
                name = name[: -len(suffix)]
        if name not in names:
            names.append(name)

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                add(node["file"])
            for key in ("parts", "chapters", "sections", "subtrees", "entries"):
                walk(node.get(key))
        elif isinstance(node, list):
            for item in node:
                walk(item)

    add(toc["root"])
    walk(toc)
    return names


DOCNAMES = _toc_docnames()
ROOT_DOC = DOCNAMES[0]
LAB_DOCS = [name for name in DOCNAMES if name.startswith("labs/")]


def _source(docname: str) -> Path | None:
    for suffix in SOURCE_SUFFIXES:
        path = REPO / f"{docname}{suffix}"
        if path.exists():
            return path
    return None


def _source_h1(docname: str) -> str | None:
    """The first level-1 MyST heading of a page's source (markdown file or notebook cell)."""
    path = _source(docname)
    if path is None:
        return None
    if path.suffix == ".ipynb":
        notebook = json.loads(path.read_text(encoding="utf8"))
        chunks = ["".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
                  for cell in notebook["cells"] if cell["cell_type"] == "markdown"]
        text = "\n".join(chunks)
    else:
        text = path.read_text(encoding="utf8")
        text = re.sub(r"\A---\n.*?\n---\n", "", text, flags=re.S)  # front matter
    fence = None
    for line in text.splitlines():
        marker = re.match(r"^\s*(`{3,}|~{3,}|:{3,})", line)
        if marker:
            if fence is None:
                fence = marker.group(1)[0] * len(marker.group(1))
            elif marker.group(1).startswith(fence):
                fence = None
            continue
        if fence is None and line.startswith("# "):
            return line[2:].strip()
    return None


def _words(text: str) -> str:
    """Compare headings by their words: drop MyST roles, link targets and markup."""
    text = re.sub(r"\{[\w:-]+\}", "", text)  # {term}`x` -> `x`
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # [text](url) -> text
    text = re.sub(r"<[^>]*>", "", text)  # {ref}`text <target>` -> text
    return " ".join(re.findall(r"[0-9a-z]+", html.unescape(text).lower()))


def _repo_settings() -> tuple[str, str, str]:
    repository = _config().get("repository", {})
    url = repository.get("url", "").rstrip("/")
    branch = repository.get("branch", "master")
    book_path = (repository.get("path_to_book") or "").strip("/")
    return url, branch, f"{book_path}/" if book_path else ""


# --------------------------------------------------------------------------------------------
# Stage "book": the strict build
# --------------------------------------------------------------------------------------------
def _tail(text: str, lines: int = 80) -> str:
    return "\n".join(text.splitlines()[-lines:])


@pytest.fixture(scope="session")
def built_site() -> Path:
    """``_build/html`` after ``jupyter-book build <repo> -W -n --keep-going`` (or $FTRAG_SITE_DIR)."""
    preset = os.environ.get("FTRAG_SITE_DIR")
    if preset:
        site = Path(preset).resolve()
        if not (site / "index.html").exists():
            pytest.fail(f"FTRAG_SITE_DIR={preset} has no index.html: build the book first (make book)")
        return site
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    if not jupyter_book.exists():
        pytest.fail(f"{jupyter_book} not found: run `make env` (jupyter-book is in requirements/dev.txt)")
    command = [str(jupyter_book), "build", str(REPO), "-W", "-n", "--keep-going"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # conftest.py sets MPLBACKEND=Agg for the test process; a kernel started with it draws no
    # inline figures, and the jupyter-cache would then keep the labs without their figures.
    env.pop("MPLBACKEND", None)
    start = time.monotonic()
    done = subprocess.run(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, errors="replace")
    output = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout)  # no ANSI colours in the report
    if done.returncode != 0:
        warnings_found = [line for line in output.splitlines()
                          if re.search(r"WARNING|ERROR|CRITICAL", line)
                          and "IPKernelApp" not in line]
        pytest.fail(
            f"`{' '.join(command)}` exited with {done.returncode} after "
            f"{time.monotonic() - start:.0f} s.\n\n"
            + ("Warnings and errors (-W turns every warning into a failure):\n  "
               + "\n  ".join(warnings_found) + "\n\n" if warnings_found else "")
            + "Last lines of the output:\n" + _tail(output),
            pytrace=False,
        )
    return REPO / "_build" / "html"


@pytest.mark.book
@pytest.mark.slow
def test_book_builds(built_site):
    """The strict build succeeds and writes a page for every entry of _toc.yml."""
    assert (built_site / "index.html").exists()
    missing = [name for name in DOCNAMES if not (built_site / f"{name}.html").exists()]
    assert not missing, f"pages in _toc.yml without a built HTML page: {missing}"
    assert (built_site / "search.html").exists() and (built_site / "searchindex.js").exists()


# --------------------------------------------------------------------------------------------
# Stage "browser": local server + headless Chromium
# --------------------------------------------------------------------------------------------
class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest's output clean
        pass


@pytest.fixture(scope="session")
def site_url(built_site):
    """Serve the built site on 127.0.0.1:<free port> from a background thread."""
    handler = functools.partial(_QuietHandler, directory=str(built_site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="site-server", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _browser_missing() -> str | None:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER)
               if not (Path(path).exists() and os.access(path, os.X_OK))]
    if missing:
        return (f"headless browser test needs {' and '.join(missing)}: install them with "
                f"`{INSTALL_HINT}` (Debian/Ubuntu, as root)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "headless browser test needs selenium: `make env` installs requirements/dev.txt"
    return None


@pytest.fixture(scope="session")
def driver():
    problem = _browser_missing()
    if problem:
        if os.environ.get("FTRAG_REQUIRE_BROWSER") == "1":
            pytest.fail(f"FTRAG_REQUIRE_BROWSER=1 but the {problem}", pytrace=False)
        pytest.skip(problem)
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager download a driver
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="ftrag-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--window-size=1280,900", f"--user-data-dir={profile}",
        # offline and deterministic: only the local server resolves (CDN scripts fail, reported)
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    browser.set_page_load_timeout(60)
    yield browser
    browser.quit()
    shutil.rmtree(profile, ignore_errors=True)


# One visit per page; every check reads from what the visit collected.
_COLLECT_JS = r"""
const article = document.querySelector('article.bd-article') || document.querySelector('main') || document.body;
// drawn by a cell: inside a cell output, or a glued figure (MyST-NB names those files by a hash)
const inOutput = el => !!el.closest('.cell_output, .output') ||
                      (el.tagName === 'IMG' && /\/[0-9a-f]{64}\.[a-z]+$/.test(el.getAttribute('src') || ''));
const text = el => { const c = el.cloneNode(true); c.querySelectorAll('.headerlink').forEach(a => a.remove());
                     return c.textContent.replace(/\s+/g, ' ').trim(); };
const h1 = article.querySelector('h1');
return {
  url: location.href,
  title: document.title,
  h1: h1 ? text(h1) : null,
  headings: Array.from(article.querySelectorAll('h1, h2, h3, h4, h5, h6'))
               .filter(h => !inOutput(h)).map(h => [Number(h.tagName[1]), text(h)]),
  links: Array.from(document.querySelectorAll('a[href]')).map(a => [a.getAttribute('href'), a.href]),
  images: Array.from(document.querySelectorAll('img')).map(img => ({
      src: img.getAttribute('src'), url: img.currentSrc || img.src, alt: img.getAttribute('alt'),
      width: img.naturalWidth, complete: img.complete,
      in_article: article.contains(img), in_output: inOutput(img)})),
  launch: Array.from(document.querySelectorAll('.dropdown-launch-buttons a[href]')).map(a => a.href),
  cell_outputs: document.querySelectorAll('.cell_output').length,
  output_figures: document.querySelectorAll('.cell_output img').length,
  errors_in_outputs: document.querySelectorAll('.cell_output .output.error, .cell_output .output.traceback').length,
  cell_inputs: document.querySelectorAll('.cell_input').length,
  input_copybuttons: document.querySelectorAll('.cell_input button.copybtn').length,
  formulas: document.querySelectorAll('article .math').length,
  typeset: document.querySelectorAll('article .math mjx-container').length,
  // cell outputs that show a library's warning (tests below name the words)
  library_messages: Array.from(document.querySelectorAll('.cell_output .output'))
      .map(o => o.textContent).filter(t => /Warning|Failed to load|IProgress/.test(t))
      .map(t => t.replace(/\s+/g, ' ').trim().slice(0, 200)),
  // tables and code blocks wider than the text column: the element, or the block that scrolls it
  // (overflow-x auto/scroll, between it and the article), must fit; a block clipped by
  // overflow: hidden is wider than the column and is reported too
  too_wide: (() => {
    const column = article.getBoundingClientRect();
    const scroller = el => {
      for (let e = el; e && e !== article; e = e.parentElement) {
        if (['auto', 'scroll'].includes(getComputedStyle(e).overflowX)) return e;
      }
      return el;
    };
    return Array.from(article.querySelectorAll('table, pre')).flatMap(el => {
      if (!el.getClientRects().length) return [];  // not shown (a folded solution)
      const box = scroller(el).getBoundingClientRect();
      const unscrolled = el.tagName === 'PRE' && el.scrollWidth > el.clientWidth + 1 &&
                         !['auto', 'scroll'].includes(getComputedStyle(el).overflowX);
      if (box.left >= column.left - 1 && box.right <= column.right + 1 && !unscrolled) return [];
      return [`${el.tagName.toLowerCase()} ${Math.round(box.width)} px wide in a ${Math.round(column.width)} px ` +
              `column${unscrolled ? ', its long lines do not scroll' : ''}: ` +
              el.textContent.replace(/\s+/g, ' ').trim().slice(0, 80)];
    });
  })(),
};
"""

# MathJax typesets after the page loaded (deferred script): wait until every formula is done.
_WAIT_MATH_JS = r"""
const formulas = document.querySelectorAll('article .math');
return formulas.length === 0 || Array.from(formulas).every(f => f.querySelector('mjx-container'));
"""

_WAIT_IMAGES_JS = r"""
document.querySelectorAll('img[loading="lazy"]').forEach(img => img.loading = 'eager');
return Array.from(document.images).every(img => img.complete);
"""


def _wait(predicate, timeout=15.0, step=0.2):
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > end:
            return value
        time.sleep(step)


def _split_log(entries: list[dict], origin: str) -> tuple[list[str], list[str]]:
    """(errors, offline): SEVERE console messages, minus blocked requests to other hosts."""
    errors, offline = [], []
    for entry in entries:
        if entry.get("level") != "SEVERE":
            continue
        message = entry.get("message", "")
        source = message.split(" ", 1)[0]
        if (source.startswith(("http://", "https://")) and not source.startswith(origin)
                and "net::ERR_" in message):
            offline.append(message)
        else:
            errors.append(message)
    return errors, offline


@pytest.fixture(scope="session")
def visit(driver, site_url):
    """visit(docname) -> dict of what the page shows; each page is loaded once per session."""
    cache: dict[str, dict] = {}

    def load(docname: str) -> dict:
        if docname not in cache:
            driver.get_log("browser")  # drop what earlier pages logged
            driver.get(f"{site_url}/{docname}.html")
            _wait(lambda: driver.execute_script(_WAIT_IMAGES_JS), timeout=10)
            _wait(lambda: driver.execute_script(_WAIT_MATH_JS), timeout=10)
            page = driver.execute_script(_COLLECT_JS)
            page["errors"], page["offline"] = _split_log(driver.get_log("browser"), site_url)
            cache[docname] = page
        return cache[docname]

    return load


# ---- per page ------------------------------------------------------------------------------
@pytest.mark.browser
@pytest.mark.parametrize("docname", DOCNAMES)
def test_page_loads_with_its_title(visit, docname):
    page = visit(docname)
    assert page["h1"], f"{docname}: no <h1> in the article (title {page['title']!r}; a 404 page?)"
    assert page["h1"] in page["title"], f"{docname}: H1 {page['h1']!r} is not in <title> {page['title']!r}"
    expected = _source_h1(docname)
    assert expected is not None, f"{docname}: no `# ` heading found in {_source(docname)}"
    assert _words(expected) == _words(page["h1"]), (
        f"{docname}: the page shows H1 {page['h1']!r}, the source's heading is {expected!r}")


@pytest.mark.browser
@pytest.mark.parametrize("docname", DOCNAMES)
def test_page_has_no_console_errors(visit, docname):
    page = visit(docname)
    assert not page["errors"], f"{docname}: console errors:\n  " + "\n  ".join(page["errors"])


@pytest.mark.browser
@pytest.mark.parametrize("docname", DOCNAMES)
def test_page_works_offline(visit, docname):
    """The browser resolves no host but the local server: the site must need nothing else (MathJax
    is served from _static/, see _ext/offline_mathjax.py)."""
    page = visit(docname)
    assert not page["offline"], (f"{docname}: requests to other hosts, which fail offline:\n  "
                                 + "\n  ".join(page["offline"]))


@pytest.mark.browser
def test_formulas_are_typeset(visit):
    pages = {docname: visit(docname) for docname in DOCNAMES}
    with_math = {d: p for d, p in pages.items() if p["formulas"]}
    assert len(with_math) >= 2, "expected formulas on the definitions chapter and the QLoRA lab at least"
    untypeset = {d: f"{p['typeset']} of {p['formulas']}" for d, p in with_math.items() if p["typeset"] < p["formulas"]}
    assert not untypeset, f"formulas left as raw TeX (MathJax did not load or failed): {untypeset}"


def _ids(path: Path, _cache: dict = {}) -> set[str]:  # noqa: B006 - deliberate memo
    if path not in _cache:
        source = path.read_text(encoding="utf8", errors="replace")
        _cache[path] = {html.unescape(m) for m in re.findall(r'\sid="([^"]+)"', source)}
    return _cache[path]


@pytest.mark.browser
@pytest.mark.parametrize("docname", DOCNAMES)
def test_page_links_and_images_resolve(visit, built_site, site_url, docname):
    page = visit(docname)
    broken = []
    for raw, absolute in page["links"]:
        if not absolute.startswith(site_url + "/") and absolute != site_url:
            continue  # external (checked by `make linkcheck`, needs internet) or mailto:
        parts = urlsplit(absolute)
        path = unquote(parts.path).lstrip("/")
        target = built_site / path
        if path == "" or path.endswith("/"):
            target = target / "index.html"
        if not target.is_file():
            broken.append(f"{raw!r} -> /{path} (no such file)")
        elif parts.fragment and target.suffix == ".html" and unquote(parts.fragment) not in _ids(target):
            broken.append(f"{raw!r} -> no id {parts.fragment!r} in /{path}")
    missing = [f"{image['src']!r} (alt {image['alt']!r})" for image in page["images"]
               if not image["width"]]
    assert not broken, f"{docname}: broken internal links:\n  " + "\n  ".join(sorted(set(broken)))
    assert not missing, f"{docname}: images that did not load (naturalWidth 0):\n  " + "\n  ".join(missing)


def _alt_is_a_path(image: dict) -> bool:
    alt = (image["alt"] or "").strip()
    name = Path(urlsplit(image["src"] or "").path).name
    return alt == (image["src"] or "") or (name and alt.endswith(name)) or alt.lower().endswith(IMAGE_SUFFIXES)


@pytest.mark.browser
@pytest.mark.parametrize("docname", DOCNAMES)
def test_page_images_have_alt_text(visit, docname):
    """Images written in the text need alt text; figures drawn by a cell get a warning only.

    A markdown image gets its alt text from ``![alt text](path)`` or the ``:alt:`` option of
    ``{figure}``/``{image}``. A notebook cell's figure gets it from the cell's metadata,
    ``{"mystnb": {"image": {"alt": "..."}}}`` (MyST-NB), a glued one from ``:alt:`` of
    ``{glue:figure}``; without it MyST-NB writes the image's file path as alt text, which a screen
    reader reads out as a hash.
    """
    page = visit(docname)
    content = [image for image in page["images"] if image["in_article"]]
    outputs = [image["src"] for image in content if image["in_output"] and _alt_is_a_path(image)]
    if outputs:
        warnings.warn(f"{docname}: {len(outputs)} figure(s) drawn by a cell have no alt text (add "
                      f"cell metadata mystnb.image.alt): {outputs}")
    missing = [f"{image['src']!r} (alt {image['alt']!r})" for image in content
               if not image["in_output"] and (not (image["alt"] or "").strip() or _alt_is_a_path(image))]
    assert not missing, (f"{docname}: images in the text without alt text (write ![alt text](path) "
                         f"or :alt:):\n  " + "\n  ".join(missing))


@pytest.mark.browser
@pytest.mark.parametrize("docname", DOCNAMES)
def test_page_headings_in_order(visit, docname):
    headings = visit(docname)["headings"]
    assert headings, f"{docname}: no headings in the article"
    problems = []
    if headings[0][0] != 1:
        problems.append(f"the first heading is h{headings[0][0]} {headings[0][1]!r}, not h1")
    h1s = [text for level, text in headings if level == 1]
    if len(h1s) > 1:
        problems.append(f"{len(h1s)} h1 headings {h1s}: a page has one `# ` title, sections use `##`")
    for (before, _), (level, text) in zip(headings, headings[1:]):
        if level > before + 1:
            problems.append(f"h{before} is followed by h{level} {text!r} (skips a level)")
    assert not problems, f"{docname}: heading order:\n  " + "\n  ".join(problems)


@pytest.mark.browser
@pytest.mark.parametrize("docname", DOCNAMES)
def test_page_has_repository_buttons(visit, docname):
    """Repository, issues and "edit this page" buttons, the edit link pointing at the source."""
    url, branch, book_path = _repo_settings()
    source = _source(docname)
    hrefs = {absolute for _, absolute in visit(docname)["links"]}
    expected = {
        "repository": url,
        "open an issue": f"{url}/issues/new",
        "edit this page": f"{url}/edit/{branch}/{book_path}{source.relative_to(REPO).as_posix() if source else docname}",
    }
    missing = [f"{what}: {href}" for what, href in expected.items()
               if not any(h == href or h.startswith(href + "?") for h in hrefs)]
    assert not missing, f"{docname}: header buttons missing:\n  " + "\n  ".join(missing)


@pytest.mark.browser
@pytest.mark.parametrize("docname", DOCNAMES)
def test_page_launch_links_open_notebooks(visit, docname):
    """A Colab/Binder link must open a notebook: Colab cannot read a MyST-NB chapter's ``.md``."""
    not_notebooks = [href for href in visit(docname)["launch"]
                     if not urlsplit(href).path.endswith(".ipynb")
                     and not unquote(urlsplit(href).query).endswith(".ipynb")]
    assert not not_notebooks, (f"{docname}: launch links that do not open a .ipynb notebook:\n  "
                               + "\n  ".join(not_notebooks))


@pytest.mark.browser
@pytest.mark.parametrize("docname", DOCNAMES)
def test_page_outputs_show_no_library_warnings(visit, docname):
    """Harmless library messages are silenced where they arise (ftrag.harmless_messages); a new one
    on a published page reads as a fault in the course."""
    shown = visit(docname)["library_messages"]
    assert not shown, f"{docname}: cell outputs with a library warning:\n  " + "\n  ".join(shown)


@pytest.mark.browser
@pytest.mark.parametrize("docname", DOCNAMES)
def test_page_tables_and_code_fit_the_column(visit, docname):
    """Wide tables and long code lines scroll inside their block (_static/wide_content.css)."""
    wide = visit(docname)["too_wide"]
    assert not wide, f"{docname}: wider than the text column:\n  " + "\n  ".join(wide)


# ---- labs ----------------------------------------------------------------------------------
@pytest.mark.browser
@pytest.mark.parametrize("docname", LAB_DOCS)
def test_lab_shows_executed_outputs_with_a_figure(visit, docname):
    page = visit(docname)
    assert page["cell_inputs"], f"{docname}: no code cells on the page"
    assert page["cell_outputs"], f"{docname}: no cell outputs: was the notebook executed?"
    assert not page["errors_in_outputs"], f"{docname}: {page['errors_in_outputs']} error output(s)"
    assert page["output_figures"] >= 1, (
        f"{docname}: {page['cell_outputs']} cell outputs but no figure (no <img> in .cell_output)")
    assert page["input_copybuttons"] >= page["cell_inputs"], (
        f"{docname}: copy buttons on {page['input_copybuttons']} of {page['cell_inputs']} code cells")


@pytest.mark.browser
@pytest.mark.parametrize("docname", LAB_DOCS)
def test_lab_has_launch_buttons(visit, docname):
    url, branch, book_path = _repo_settings()
    org_repo = urlsplit(url).path.strip("/")
    notebook = f"{book_path}{docname}.ipynb"
    launch = visit(docname)["launch"]
    colab = [href for href in launch if "colab.research.google.com" in href]
    binder = [href for href in launch if "mybinder.org" in href]
    assert colab, f"{docname}: no Colab link in the launch menu (found {launch})"
    assert binder, f"{docname}: no Binder link in the launch menu (found {launch})"
    assert colab[0].endswith(f"/github/{org_repo}/blob/{branch}/{notebook}"), colab[0]
    assert f"/v2/gh/{org_repo}/{branch}" in binder[0] and binder[0].endswith(notebook), binder[0]


_SOLUTIONS_JS = r"""
// sphinx-togglebutton folds an admonition's body with visibility: hidden and height 0
const shown = el => getComputedStyle(el).visibility !== 'hidden' && el.offsetHeight > 0;
const sols = Array.from(document.querySelectorAll('.solution.dropdown'));
const body = s => Array.from(s.children).filter(c => !c.classList.contains('admonition-title'));
return {
  solutions: sols.length,
  buttons: sols.filter(s => s.querySelector('.toggle-button')).length,
  visible: sols.filter(s => body(s).some(shown)).length,
  with_outputs: sols.filter(s => s.querySelector('.cell_output')).length,
  first_visible: sols.length > 0 && body(sols[0]).some(shown),
  first_state: sols.length > 0 ? sols[0].className + ' | ' + body(sols[0]).map(
      c => c.tagName + '.' + c.className + ':' + getComputedStyle(c).visibility + '/' + c.offsetHeight).join(', ') : '',
};
"""


@pytest.mark.browser
@pytest.mark.parametrize("docname", DOCNAMES)
def test_solutions_are_hidden_until_clicked(driver, site_url, docname):
    """Solutions are folded away on load and open on a click, on every page that has them. Every
    lab has at least three, and they contain the executed solution code's output (CI ran them)."""
    is_lab = docname in LAB_DOCS
    driver.get(f"{site_url}/{docname}.html")

    def state():
        return driver.execute_script(_SOLUTIONS_JS)

    _wait(lambda: (s := state())["solutions"] and s["buttons"] == s["solutions"], timeout=10)
    before = state()
    if not is_lab and not before["solutions"]:
        return  # a chapter without exercises (references, glossary, ...)
    assert before["solutions"] >= (3 if is_lab else 1), (
        f"{docname}: {before['solutions']} solution(s), the course promises 3 per lab")
    assert before["buttons"] == before["solutions"], f"{docname}: toggle buttons on {before['buttons']} of {before['solutions']} solutions"
    assert before["visible"] == 0, f"{docname}: {before['visible']} solution(s) visible before any click"
    assert not is_lab or before["with_outputs"] >= 1, f"{docname}: no solution shows an executed cell output"
    # the chevron button: the centre of the title is often the link back to the exercise
    button = driver.find_element("css selector", ".solution.dropdown > .admonition-title .toggle-button")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", button)
    button.click()
    assert _wait(lambda: state()["first_visible"], timeout=5), f"{docname}: the first solution did not open on click ({state()['first_state']})"


# ---- site-wide -----------------------------------------------------------------------------
@pytest.mark.browser
def test_index_redirects_to_the_first_page(driver, site_url):
    driver.get(site_url + "/")
    assert _wait(lambda: driver.current_url.endswith(f"/{ROOT_DOC}.html"), timeout=10), (
        f"/ did not redirect to {ROOT_DOC}.html (at {driver.current_url})")


@pytest.mark.browser
def test_search_finds_results(driver, site_url):
    driver.get_log("browser")
    driver.get(f"{site_url}/search.html?q={SEARCH_TERM}")

    def results():
        return driver.execute_script(
            "const s = document.querySelector('#search-results .search-summary, p.search-summary');"
            "return [document.querySelectorAll('#search-results ul.search li').length,"
            "        s ? s.textContent.trim() : ''];")

    found = _wait(lambda: results()[0] > 0 or "found" in results()[1].lower()
                  or "did not match" in results()[1].lower(), timeout=20)
    count, summary = results()
    errors, _ = _split_log(driver.get_log("browser"), site_url)
    assert not errors, "search page console errors:\n  " + "\n  ".join(errors)
    assert found and count >= 1, f"search for {SEARCH_TERM!r} returned no results ({summary!r})"


@pytest.mark.browser
def test_screenshots(driver, site_url, built_site, visit, capsys):
    """Screenshots of the home page and of a lab (the first one with a figure) for a quick look."""
    folder = built_site / "_screenshots"
    folder.mkdir(exist_ok=True)
    shots = {"home.png": ROOT_DOC}
    if LAB_DOCS:
        shots["lab.png"] = next((d for d in LAB_DOCS if visit(d)["output_figures"]), LAB_DOCS[0])
    for name, docname in shots.items():
        driver.get(f"{site_url}/{docname}.html")
        _wait(lambda: driver.execute_script(_WAIT_IMAGES_JS), timeout=10)
        path = folder / name
        assert driver.save_screenshot(str(path)), f"could not save {path}"
        assert path.stat().st_size > 10_000, f"{path} is suspiciously small (blank page?)"
        with capsys.disabled():
            print(f"\nscreenshot of {docname}: {path}")


# ---- measured figures on the chapter pages ---------------------------------------------------------
_TIMINGS_TABLE_JS = r"""
for (const table of document.querySelectorAll('article table')) {
  const head = [...table.querySelectorAll('thead th, tr:first-child th')].map(th => th.innerText.trim());
  if (!head.some(h => h.includes('cpu') && h.includes('profile'))) continue;
  return [...table.querySelectorAll('tbody tr')].map(tr => [...tr.cells].map(td => td.innerText.trim()));
}
return null;
"""


@pytest.mark.browser
def test_instructor_notes_show_the_measured_lab_timings(visit, driver, site_url):
    """When the timings file exists, the cpu column of the timings table shows what it measured
    (formatted as the page formats it), never "not yet measured"."""
    sys.path.insert(0, str(REPO / "src"))
    from ftrag import lab_timings

    timings = lab_timings.lab_timings()
    labs = {key: seconds for key, seconds in timings.items() if key.startswith("lab_")}
    if not any(seconds is not None for seconds in labs.values()):
        pytest.skip("no lab timings recorded in _build/results/timings.json (make test writes them)")
    visit("chapters/instructor_notes")
    driver.get(f"{site_url}/chapters/instructor_notes.html")   # visit() caches: it may not have navigated
    rows = driver.execute_script(_TIMINGS_TABLE_JS)
    assert rows, "chapters/instructor_notes: no table with a 'cpu profile' column"
    shown = {row[0]: row[1] for row in rows if len(row) > 1}
    for key, seconds in labs.items():
        if seconds is None:
            continue
        number = int(key.split("_")[1])
        label = next((name for name in shown if name.startswith(f"Lab {number},")), None)
        assert label, f"no row for lab {number} in the timings table (rows: {list(shown)})"
        assert shown[label] != lab_timings.NOT_MEASURED, f"{label}: 'not yet measured' although {key} = {seconds:.0f} s"
        assert shown[label] == lab_timings.format_duration(seconds), (label, shown[label], seconds)


_FLOWCHART_JS = r"""
return [...document.querySelectorAll('article img')].filter(img => (img.alt || '').startsWith('Flowchart'))
  .map(img => ({src: img.getAttribute('src'), alt: img.alt, natural: img.naturalWidth,
                rendered: img.getBoundingClientRect().width}));
"""


def _png_dpi(data: bytes) -> float | None:
    """The resolution a PNG records in its pHYs chunk (matplotlib writes the figure's dpi there)."""
    import struct

    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"pHYs":
            x_per_unit, _, unit = struct.unpack(">IIB", data[pos + 8:pos + 17])
            return x_per_unit * 0.0254 if unit == 1 else None
        pos += 12 + length
    return None


@pytest.mark.browser
def test_flowchart_text_is_readable_at_page_width(visit, driver, built_site, site_url):
    """The decision flowcharts are PNGs drawn at ``fontsize`` points; at the width the page shows
    them, their node text must be at least 11 CSS px: points x dpi / 72 x rendered / natural width."""
    source = (REPO / "chapters" / "decision.md").read_text(encoding="utf8")
    sizes = [float(s) for s in re.findall(r"flowchart\(TREE\.\w+, fontsize=([\d.]+)\)", source)]
    assert sizes, "chapters/decision.md: no flowchart(TREE..., fontsize=...) call found"
    visit("chapters/decision")
    driver.get(f"{site_url}/chapters/decision.html")   # visit() caches: it may not have navigated
    figures = driver.execute_script(_FLOWCHART_JS)
    assert len(figures) == len(sizes), f"{len(sizes)} flowcharts in the source, {len(figures)} on the page"
    for figure, points in zip(figures, sizes):
        path = (built_site / "chapters" / unquote(figure["src"])).resolve()
        assert path.suffix == ".png" and path.exists(), f"flowchart image {figure['src']} is not a PNG of the site"
        dpi = _png_dpi(path.read_bytes())
        assert dpi, f"{path.name}: no pHYs chunk, so the drawing resolution is unknown"
        text_px = points * dpi / 72 * figure["rendered"] / figure["natural"]
        assert text_px >= 11, (f"{figure['alt'][:40]}...: node text renders at {text_px:.1f} px "
                               f"({points:g} pt at {dpi:.0f} dpi, shown {figure['rendered']:.0f} of "
                               f"{figure['natural']} px wide); draw it larger or let it use the page width")

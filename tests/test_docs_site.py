"""The documentation site builds strictly and works in a real headless Chromium.

The site is built once per session with `zensical build --strict` into a temporary directory,
served over HTTP on 127.0.0.1 (its search needs http, not file://), and opened in Debian's
Chromium through Playwright. A screenshot of the home page is kept in test-output/.
"""

from __future__ import annotations

import functools
import html
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOT = ROOT / "test-output" / "docs-home.png"


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="session")
def built_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built strictly from a copy of the sources (the checkout gets no site/)."""
    if shutil.which("zensical", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("zensical is not installed: pip install -e '.[docs]'")
    work = tmp_path_factory.mktemp("docs")
    for name in ("mkdocs.yml", "README.md"):
        shutil.copy(ROOT / name, work / name)
    for name in ("docs", "examples", "planet_async"):
        shutil.copytree(ROOT / name, work / name, ignore=shutil.ignore_patterns("__pycache__"))
    zensical = str(Path(sys.executable).parent / "zensical")
    result = subprocess.run(
        [zensical, "build", "--strict"], cwd=work, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return work / "site"


@pytest.fixture(scope="session")
def site_url(built_site: Path) -> Iterator[str]:
    handler = functools.partial(_QuietHandler, directory=str(built_site))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture(scope="module")
def page(chromium_path: str) -> Iterator[object]:
    # Module scope: Playwright's sync API keeps an asyncio loop running in this thread while it
    # is open, and no later test could start its own.
    from playwright.sync_api import sync_playwright

    from tests._browser import CHROMIUM_ARGS

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium_path, headless=True, args=list(CHROMIUM_ARGS)
        )
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        context.set_default_timeout(15_000)
        yield context.new_page()
        browser.close()


def test_every_page_and_reference_is_built(built_site: Path) -> None:
    """The strict build made every page of the nav and rendered the API reference."""
    pages = ("quickstart", "clients", "fleets", "web-services", "benchmarks", "reference/clients")
    for page in (*pages, "reference/storage", "reference/metrics"):
        assert (built_site / page / "index.html").is_file(), page
    reference = (built_site / "reference" / "auth" / "index.html").read_text()
    assert "planet_async.PlanetAuth" in reference
    assert "from_client_credentials" in reference
    # The includes worked: the example's code and the README's sections are on the pages.
    assert (
        "from_client_credentials" in (built_site / "scenarios" / "m2m" / "index.html").read_text()
    )
    assert "--8&lt;--" not in (built_site / "fleets" / "index.html").read_text()
    benchmarks = (built_site / "benchmarks" / "index.html").read_text()
    assert "storm-stall.svg" in benchmarks


# A paragraph with a line that starts like a list item: Markdown made no list of it (a list
# needs a blank line before it, which a `--8<--` include can swallow).
_LIST_IN_A_PARAGRAPH = re.compile(r"<p>(?:(?!</p>).)*?\n(?:[-*+]|\d+\.) ", re.DOTALL)


def test_lists_render_as_lists(built_site: Path) -> None:
    """Every Markdown list on the site is an HTML list, not a paragraph of literal dashes; the
    Fleets page's "How it works" points are items of one <ul>."""
    broken = [
        f"{path.relative_to(built_site)}: {found.group(0)[:80]!r}"
        for path in sorted(built_site.rglob("*.html"))
        for found in [_LIST_IN_A_PARAGRAPH.search(path.read_text())]
        if found
    ]
    assert broken == []
    fleets = (built_site / "fleets" / "index.html").read_text()
    promises = fleets.partition("How it works, and what it promises:")[2]
    assert promises.startswith("</p>\n<ul>\n<li>")
    items = promises.partition("<h")[0]  # up to the next heading: the list, nested ones too
    readme = (ROOT / "README.md").read_text()
    snippet = readme.partition("[start:redis-details]")[2].partition("[end:redis-details]")[0]
    points = [line for line in snippet.splitlines() if line.lstrip().startswith("- ")]
    assert len(points) >= 8
    assert items.count("<li>") == len(points)
    assert "<li><strong>Why coredis</strong>" in items
    assert "<strong>When Redis fails</strong>" in items


def test_the_fleet_example_says_how_to_run_it(built_site: Path) -> None:
    """The Fleets page gives the Dask example's install line (trio included, for the trio run it
    shows) and its run commands, not only the example's docstring."""
    text = html.unescape(re.sub(r"<[^>]+>", "", (built_site / "fleets" / "index.html").read_text()))
    commands = text.partition("Run it from a clone of the repository.")[2]
    assert "python3 -m pip install '.[redis]' distributed trio" in commands
    assert "python3 examples/fleet_dask.py --workers 4 --backend trio" in commands


def test_home_page_renders(page, site_url: str) -> None:
    """The home page loads with its title and heading; its screenshot is kept."""
    page.goto(site_url)
    assert "planet_async" in page.title()
    assert page.locator("h1").first.inner_text().startswith("planet_async")
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    print(f"\nscreenshot of the docs' home page: {SCREENSHOT}")


def test_search_finds_a_term(page, site_url: str) -> None:
    """Typing a term into the search box lists the page that has it, and the result opens it."""
    page.goto(site_url)
    page.locator(".md-search__button").click()
    box = page.get_by_role("searchbox").or_(page.get_by_role("combobox"))
    box.first.fill("coredis")
    result = page.get_by_text("Fleets: many machines, one session, through Redis").first
    result.click()
    page.wait_for_url(f"{site_url}fleets/")
    assert page.locator("h1").first.inner_text().startswith("Fleets")

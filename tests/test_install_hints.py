"""Install instructions a newcomer can follow: planet-async is not on PyPI yet, so nothing (no
page, no example, no `MissingExtra`) tells anyone to `pip install planet-async`; they say how to
install from a clone, and a missing extra's hint names the clone this copy came from."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from planet_async import _extras
from planet_async._extras import clone_of, install_command

ROOT = Path(__file__).resolve().parents[1]

# "pip install planet-async", "pip install 'planet-async[redis]'", "pip install -U planet-async":
# the name as a requirement from an index, where a path ('.[redis]', /path/to/clone) is meant.
_FROM_AN_INDEX = re.compile(r"pip install(?: -\S+)*\s+['\"]?planet-async\b")


def _run_without(library: str, code: str) -> str:
    """`code`'s output in a fresh interpreter where `library` cannot be imported."""
    prelude = f"import sys\nsys.modules[{library!r}] = None  # as if not installed\n"
    result = subprocess.run(
        [sys.executable, "-c", prelude + code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip()


def _assert_installs_from_this_clone(message: str, extra: str) -> None:
    """The hint's command installs `extra` from a directory that is this planet-async's clone."""
    assert not _FROM_AN_INDEX.search(message), message
    assert "not on PyPI" in message
    command = re.search(r"python3 -m pip install (?:-e )?('[^']+'|\S+)", message)
    assert command is not None, message
    (target,) = shlex.split(command.group(1))
    directory, _, rest = target.partition("[")
    assert rest == f"{extra}]"
    project = (Path(directory) / "pyproject.toml").read_text()
    assert '\nname = "planet-async"\n' in project
    assert f"\n{extra} = [" in project  # an extra it declares
    assert Path(directory).resolve() == ROOT  # the tests run from an editable install of it


@pytest.mark.parametrize(
    ("library", "code", "extra"),
    [
        ("aiohttp", "import planet_async.aiohttp", "aiohttp"),
        ("httpx2", "import planet_async.httpx2", "httpx2"),
        ("coredis", "planet_async.RedisStorage('redis://127.0.0.1:1/0')", "redis"),
        ("opentelemetry", "planet_async.otel.instrument(None)", "otel"),
        ("starlette", "import planet_async.starlette", "starlette"),
    ],
)
def test_a_missing_extra_says_how_to_install_it_from_the_clone(
    library: str, code: str, extra: str
) -> None:
    """Each integration's `MissingExtra` gives a command that installs the extra from the clone
    this copy was installed from, never from PyPI, where planet-async is not."""
    message = _run_without(
        library,
        f"""
import planet_async, planet_async.otel
try:
    {code}
except planet_async.MissingExtra as exc:
    print(exc)
""",
    )
    assert f"needs the {extra} extra" in message
    _assert_installs_from_this_clone(message, extra)


def test_the_device_login_says_how_to_get_a_qr_code() -> None:
    """`auth login --qr` without the qr extra says, beside the code, how to install it."""
    message = _run_without(
        "qrcode", "from planet_async.cli._main import _qr_text; print(_qr_text('https://x.test/'))"
    )
    assert "needs the qr extra" in message
    _assert_installs_from_this_clone(message, "qr")


@pytest.mark.parametrize(
    ("direct_url", "expected"),
    [
        (
            {"url": "file:///src/planet_async", "dir_info": {"editable": True}},
            ("/src/planet_async", True),
        ),
        ({"url": "file:///src/planet_async", "dir_info": {}}, ("/src/planet_async", False)),
        (
            {"url": "file:///home/a%20b/planet%25async", "dir_info": {}},
            ("/home/a b/planet%async", False),
        ),
        ({"url": "file://localhost/src/p", "dir_info": {}}, ("/src/p", False)),
        ({"url": "file:///dist/planet_async-0.2.0.whl", "archive_info": {}}, None),
        ({"url": "https://example.test/p.git", "vcs_info": {"vcs": "git"}}, None),
        ({"url": "file://other-host/src/p", "dir_info": {}}, None),
        ({"url": "https://example.test/src", "dir_info": {}}, None),
        ("not json", None),
        (None, None),
    ],
)
def test_the_clone_is_read_from_pips_record(direct_url: object, expected: object) -> None:
    """Only a local directory recorded in PEP 610's direct_url.json counts as the clone; an
    archive, a VCS URL, another host or garbage do not."""
    text = direct_url if isinstance(direct_url, str | None) else json.dumps(direct_url)
    assert clone_of(text) == expected


def test_without_a_recorded_clone_the_hint_says_to_use_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Installed from a wheel (or not installed), the hint says to run pip in a clone."""
    monkeypatch.setattr(_extras, "_installed_from", lambda: None)
    command = install_command("redis")
    assert command.startswith("in a clone of planet_async's repository")
    assert "python3 -m pip install '.[redis]'" in command
    assert "not on PyPI" in command
    assert not _FROM_AN_INDEX.search(command)


def _documents() -> list[Path]:
    found = [ROOT / "README.md", ROOT / "examples" / "README.md", ROOT / "benchmarks" / "README.md"]
    found += sorted((ROOT / "docs").rglob("*.md"))
    found += sorted((ROOT / "examples").glob("*.py"))
    found += sorted((ROOT / "planet_async").rglob("*.py"))
    return found


def test_nothing_says_to_install_planet_async_from_an_index() -> None:
    """The README, the docs pages, the examples and the package's docstrings and messages name
    no `pip install planet-async` (with or without extras): it is not on PyPI yet."""
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in _documents()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if _FROM_AN_INDEX.search(line)
    ]
    assert offenders == []
    # The pattern itself finds what it is for.
    assert _FROM_AN_INDEX.search("python3 -m pip install 'planet-async[redis]'")
    assert _FROM_AN_INDEX.search("pip install -U planet-async")
    assert not _FROM_AN_INDEX.search("python3 -m pip install '.[redis]'")

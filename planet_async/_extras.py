"""What to run to install an extra, for the `MissingExtra` an optional integration raises.

planet-async is not on PyPI yet, so a ``pip install`` of its name would fetch nothing (or someone
else's package). The command names the clone this copy was installed from when pip
recorded one (PEP 610's ``direct_url.json``), and a clone in general otherwise.
"""

from __future__ import annotations

import functools
import json
import shlex
from importlib import metadata
from urllib.parse import urlsplit

from ._errors import MissingExtra

__all__ = ["install_command", "missing_extra"]

DISTRIBUTION = "planet-async"
NOT_ON_PYPI = "planet-async is not on PyPI yet"


def missing_extra(what: str, extra: str, *, detail: str = "") -> MissingExtra:
    """The error for `what`, which needs the optional `extra`: it says what to run.

    `detail` follows the extra's name in parentheses (say, which version it needs).
    """
    need = f"{extra} extra ({detail})" if detail else f"{extra} extra"
    return MissingExtra(f"{what} needs the {need}: {install_command(extra)}")


def install_command(extra: str) -> str:
    """How to install planet-async with `extra`, as one line for a person to run."""
    clone = _installed_from()
    if clone is None:
        return (
            f"in a clone of planet_async's repository, run python3 -m pip install '.[{extra}]' "
            f"({NOT_ON_PYPI})"
        )
    directory, editable = clone
    edit = "-e " if editable else ""
    target = shlex.quote(f"{directory}[{extra}]")
    return f"python3 -m pip install {edit}{target} (from the clone it came from; {NOT_ON_PYPI})"


@functools.cache
def _installed_from() -> tuple[str, bool] | None:
    """The local directory pip installed this copy from, and whether editably; None when it was
    installed otherwise (a wheel, an index) or is not installed."""
    try:
        text = metadata.distribution(DISTRIBUTION).read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    return clone_of(text)


def clone_of(direct_url: str | None) -> tuple[str, bool] | None:
    """The directory and editable flag of a PEP 610 ``direct_url.json`` that names a local
    directory; None for anything else (an archive, a VCS URL, garbage)."""
    try:
        data = json.loads(direct_url or "")
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("dir_info"), dict):
        return None
    url = data.get("url")
    if not isinstance(url, str) or not url.startswith("file:"):
        return None
    from urllib.request import url2pathname  # imports much; only on this error path

    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        return None
    return url2pathname(parts.path), data["dir_info"].get("editable") is True

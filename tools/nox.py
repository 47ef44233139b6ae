"""Run this project's nox sessions with nothing installed but Python: `python3 tools/nox.py`.

It works where `pip install nox` does not: a Debian or Ubuntu system Python that refuses installs
outside a virtualenv (PEP 668), with or without pip, and without the `venv` package. It needs only
the standard library and the network to PyPI:

1. uv, pinned below with the SHA-256 of each platform's wheel, is downloaded from PyPI once and
   unpacked into `.nox/_uv/` (a uv already on the PATH at the pinned version is used instead).
2. uv installs nox into `.nox/_nox/`, at the exact version `uv.lock` pins (the `nox` group).
3. nox runs with the arguments given, on this Python; each session installs from `uv.lock`.

Arguments go to nox: `python3 tools/nox.py -s demo`, `python3 tools/nox.py -s tests -- -k redis`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path

UV_VERSION = "0.13.8"
# The wheels of uv UV_VERSION on PyPI, by platform tag, and their SHA-256 (from PyPI's index).
_UV_WHEELS = {
    "manylinux_2_17_x86_64.manylinux2014_x86_64": (
        "e18a57b8b352eb7c8feb317b9f6f533c8f0ad9673fd6cf34bbe3cf1a9f6a8984"
    ),
    "musllinux_1_1_x86_64": "29451c60f5e8b07403e0a175d5229efc36b0289b34143ff4aaa499a5dd52553a",
    "manylinux_2_17_aarch64.manylinux2014_aarch64.musllinux_1_1_aarch64": (
        "0b3e8b1a4f5e405e31e2ff33de8af4744831e9f7338539671efbd8c3c94e791d"
    ),
    "macosx_10_12_x86_64": "b7124ca1956ec2e476a1003ea5715a15f0266afaec37f4dc9c6972ba8183e6d1",
    "macosx_11_0_arm64": "62b6943c7fd64fac6854f780bea6e0359e5a5bc3241f83ee357bb38276afac49",
    "win_amd64": "cfbc13020a64cdf2f116d2936824c38edbf41e5c07f1ea291baf02e31ebf3ed0",
    "win_arm64": "b4184029b1b7c54409b9cd4372c73a36ef9c2d1d7cf3b0aca59c8b1932f041dc",
}
_INDEX = os.environ.get("PLANET_ASYNC_UV_INDEX", "https://pypi.org/simple")

ROOT = Path(__file__).resolve().parent.parent
EXE = ".exe" if sys.platform == "win32" else ""


def _say(message: str) -> None:
    print(f"tools/nox.py: {message}", file=sys.stderr, flush=True)


def _platform_tag() -> str:
    machine = platform.machine().lower()
    if sys.platform == "win32":
        return "win_arm64" if machine in ("arm64", "aarch64") else "win_amd64"
    if sys.platform == "darwin":
        return "macosx_11_0_arm64" if machine == "arm64" else "macosx_10_12_x86_64"
    if machine in ("x86_64", "amd64"):
        libc, _ = platform.libc_ver()
        if libc == "glibc":
            return "manylinux_2_17_x86_64.manylinux2014_x86_64"
        return "musllinux_1_1_x86_64"
    if machine in ("aarch64", "arm64"):
        return "manylinux_2_17_aarch64.manylinux2014_aarch64.musllinux_1_1_aarch64"
    raise SystemExit(
        f"tools/nox.py: no uv wheel is pinned for {sys.platform} on {machine}: install uv "
        f"{UV_VERSION} (https://docs.astral.sh/uv/) and run `uvx nox` instead"
    )


def _on_path() -> str | None:
    """A uv on the PATH at exactly the pinned version, or None."""
    found = shutil.which("uv")
    if found is None:
        return None
    try:
        said = subprocess.run(
            [found, "--version"], capture_output=True, text=True, check=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return found if said.stdout.split()[1:2] == [UV_VERSION] else None


def _download_uv(target: Path) -> Path:
    tag = _platform_tag()
    name = f"uv-{UV_VERSION}-py3-none-{tag}.whl"
    expected = _UV_WHEELS[tag]
    request = urllib.request.Request(
        f"{_INDEX.rstrip('/')}/uv/",
        headers={"Accept": "application/vnd.pypi.simple.v1+json"},
    )
    _say(f"downloading uv {UV_VERSION} ({tag}) from {_INDEX}")
    with urllib.request.urlopen(request, timeout=60) as response:
        index = json.load(response)
    url = next((f["url"] for f in index["files"] if f["filename"] == name), None)
    if url is None:
        raise SystemExit(f"tools/nox.py: {_INDEX} has no {name}")
    with urllib.request.urlopen(url, timeout=300) as response:
        wheel = response.read()
    if hashlib.sha256(wheel).hexdigest() != expected:
        raise SystemExit(f"tools/nox.py: {name} does not have the pinned SHA-256; not using it")
    binary = target / f"uv{EXE}"
    with zipfile.ZipFile(io.BytesIO(wheel)) as archive:
        member = next(n for n in archive.namelist() if n.endswith(f".data/scripts/uv{EXE}"))
        target.mkdir(parents=True, exist_ok=True)
        partial = binary.with_suffix(".partial")
        partial.write_bytes(archive.read(member))
    partial.chmod(0o755)
    partial.replace(binary)
    return binary


def _uv() -> str:
    cached = ROOT / ".nox" / "_uv" / UV_VERSION / f"uv{EXE}"
    if cached.exists():
        return str(cached)
    return _on_path() or str(_download_uv(cached.parent))


def main() -> int:
    uv = _uv()
    env = dict(os.environ)
    # nox lives in a virtualenv of its own; sessions make theirs under .nox/ with this Python.
    env["UV_PROJECT_ENVIRONMENT"] = str(ROOT / ".nox" / "_nox")
    env.setdefault("UV_PYTHON_DOWNLOADS", "never")
    command = [uv, "run", "--locked", "--only-group", "nox", "--python", sys.executable]
    command += ["--", "python", "-m", "nox", *sys.argv[1:]]
    return subprocess.call(command, cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main())

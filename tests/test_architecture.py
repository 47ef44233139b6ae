"""The package's shape: no import cycles, one URL policy, and HTTP libraries only at the edges."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "planet_async"


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _imports(name: str) -> set[str]:
    """Every planet_async module `name` imports, at module level or inside a function."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            candidates = {target} | {f"{target}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            candidates = {alias.name for alias in node.names}
        else:
            continue
        found |= {c for c in candidates if c in MODULES and c != name}
    return found


def _cycle_through(start: str, graph: dict[str, set[str]]) -> list[str] | None:
    stack = [(start, [start])]
    seen = set()
    while stack:
        node, path = stack.pop()
        for nxt in graph[node]:
            if nxt == start:
                return [*path, start]
            if nxt not in seen:
                seen.add(nxt)
                stack.append((nxt, [*path, nxt]))
    return None


def test_no_import_cycles() -> None:
    """No module imports itself through others (lazy imports inside functions count too), except
    a package's `__init__` re-exporting its own submodules."""
    graph = {name: _imports(name) for name in MODULES}
    for name, targets in graph.items():
        # A submodule importing from its own package's __init__ is a re-export, not a cycle.
        graph[name] = {t for t in targets if not name.startswith(f"{t}.")}
    cycles = [c for name in MODULES if (c := _cycle_through(name, graph))]
    assert cycles == []


def _sources_using(word: str) -> set[str]:
    return {name for name, path in MODULES.items() if word in path.read_text()}


def test_one_loopback_rule() -> None:
    """Loopback, canonical hosts and https rules are decided in `_urls` alone."""
    assert _sources_using("import ipaddress") == {"planet_async._urls"}
    assert _sources_using("def is_loopback") == {"planet_async._urls"}
    assert _sources_using('startswith("127.') == set()


@pytest.mark.parametrize("library", ["httpx", "aiohttp", "httpx2", "requests"])
def test_http_libraries_only_in_the_adapter_and_the_transport(library: str) -> None:
    """Only the adapters and the token-endpoint transport import an HTTP library."""
    users = {
        name
        for name in MODULES
        if any(
            isinstance(node, (ast.Import, ast.ImportFrom))
            and any(
                (getattr(node, "module", None) or alias.name).split(".")[0] == library
                for alias in node.names
            )
            for node in ast.walk(ast.parse(MODULES[name].read_text()))
        )
    }
    allowed = {
        "httpx": {
            "planet_async._auth",
            "planet_async._http",
            "planet_async._wire",  # the transport's side in the helper process
            "planet_async.planet_sdk",
            "planet_async.starlette",
        },
        "httpx2": {"planet_async.httpx2"},
        "aiohttp": {"planet_async.aiohttp"},
        "requests": {"planet_async.requests"},
    }[library]
    assert users == allowed

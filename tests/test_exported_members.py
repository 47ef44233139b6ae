"""The public surface is exactly what `__all__` says."""

from __future__ import annotations

import types

import planet_async


def test_all_is_exactly_the_public_names() -> None:
    """Every public name is in `__all__`, every `__all__` entry exists, and it is sorted."""
    public = {
        name
        for name, value in vars(planet_async).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert set(planet_async.__all__) == public
    assert planet_async.__all__ == sorted(planet_async.__all__, key=lambda n: (not n.isupper(), n))
    for name in planet_async.__all__:
        assert hasattr(planet_async, name)


def test_errors_share_one_root() -> None:
    """Every exception the package exports derives from PlanetAuthError."""
    exported = [getattr(planet_async, n) for n in planet_async.__all__]
    errors = [e for e in exported if isinstance(e, type) and issubclass(e, BaseException)]
    assert len(errors) >= 10
    assert all(issubclass(e, planet_async.PlanetAuthError) for e in errors)

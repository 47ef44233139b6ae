"""The version has one source: the installed distribution and the package agree on it."""

from __future__ import annotations

import importlib.metadata

import planet_async


def test_distribution_metadata_has_the_package_version() -> None:
    """The installed distribution's metadata version is `planet_async.__version__`."""
    assert importlib.metadata.version("planet-async") == planet_async.__version__

"""The `planet-async` command-line tool."""

from ._main import main as main

__all__ = ["main"]

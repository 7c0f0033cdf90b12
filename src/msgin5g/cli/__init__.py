"""The ``msgin5g`` command line (``python -m msgin5g`` works too)."""

from msgin5g.cli.main import main

__all__ = ["main"]

"""msgin5g: the 3GPP MSGin5G Service in Python.

``pip install msgin5g`` brings the device side (``msgin5g.client``,
``msgin5g.gateway``, the CoAP engine and the device commands of the CLI);
``pip install 'msgin5g[server]'`` adds the server stack (docs/operations.md,
"Installing"). ``msgin5g.__version__`` is read from the installed distribution's
metadata on first use. The one thing done on import: :mod:`msgin5g._native` decides
whether the hot path runs compiled (mypyc) or as the .py files (docs/performance.md,
"Compiled hot path (mypyc)").
"""

from pathlib import Path as _Path

from msgin5g import _native

__all__ = ["__version__"]

_native.install(_Path(__file__).parent)


def __getattr__(name: str) -> str:
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("msgin5g")
        except PackageNotFoundError:  # run from a source tree, not installed
            return "0+unknown"
    raise AttributeError(f"module 'msgin5g' has no attribute {name!r}")

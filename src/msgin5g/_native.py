"""The compiled hot path: mypyc-built modules, loaded only while they match the .py files.

``pip install`` may compile a set of modules with mypyc (``hatch_build.py``) into the
directory ``msgin5g_native`` beside the package (site-packages), never into the source
tree, with a manifest holding the SHA-256 of each module's source at compile time.
:func:`install` (run by ``msgin5g/__init__.py``) puts a finder first on
``sys.meta_path`` that loads those compiled modules instead of the .py files, and only
when every source in the manifest still hashes the same. An edited (or missing) source
makes the whole set load as Python, with one warning line on stderr: the compiled modules
call each other directly, so one stale module taints the set. ``MSGIN5G_PURE=1`` loads
Python without a word. :data:`status` says which happened (``msgin5g --version``).

Stdlib only, and cheap: it runs on every ``import msgin5g``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Sequence
from importlib.machinery import (
    EXTENSION_SUFFIXES,
    ExtensionFileLoader,
    ModuleSpec,
    PathFinder,
)
from pathlib import Path
from types import ModuleType
from typing import Any

NATIVE = "msgin5g_native"
MANIFEST = "manifest.json"

#: what this process runs: "compiled (N modules: ...)" or "pure Python (why)"
status = "pure Python (not set up)"
#: the dotted names loaded from compiled modules (empty when pure)
compiled: tuple[str, ...] = ()


class _Finder:
    """A meta path finder for exactly the compiled modules and their shared library."""

    def __init__(self, paths: dict[str, str]) -> None:
        self._paths = paths

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        file = self._paths.get(fullname)
        if file is None:
            return None
        return ModuleSpec(fullname, ExtensionFileLoader(fullname, file), origin=file)

    def invalidate_caches(self) -> None:
        pass


def _stale(package: Path, manifest: dict[str, Any]) -> str | None:
    """The first module whose source changed since the build, or None."""
    for name, entry in manifest["modules"].items():
        try:
            data = (package / entry["source"]).read_bytes()
        except OSError:
            return f"{name} has no source"
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            return f"msgin5g/{entry['source']} changed since the build"
    return None


def places() -> list[Path]:
    """Every ``msgin5g_native`` directory on ``sys.path``, in its order."""
    spec = PathFinder.find_spec(NATIVE)
    if spec is None or spec.submodule_search_locations is None:
        return []
    return [Path(p) for p in spec.submodule_search_locations]


def choose(package: Path, candidates: list[Path]) -> tuple[dict[str, str], str]:
    """The compiled files to load (name -> path) and the status line.

    The first of *candidates* built by this Python from the sources now in
    *package* wins; when there is none but one was stale, one line on stderr.
    """
    if os.environ.get("MSGIN5G_PURE", "") not in ("", "0"):
        return {}, "pure Python (MSGIN5G_PURE is set)"
    stale = None
    for place in candidates:
        try:
            manifest = json.loads((place / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if manifest.get("ext_suffix") != EXTENSION_SUFFIXES[0]:
            stale = stale or f"built for another Python ({manifest.get('ext_suffix')})"
            continue
        why = _stale(package, manifest)
        if why is not None:
            stale = stale or f"{why} ({place})"
            continue
        paths = {m: str(place / e["file"]) for m, e in manifest["modules"].items()}
        paths[manifest["group"]] = str(
            place / (manifest["group"] + EXTENSION_SUFFIXES[0])
        )
        mypyc = sorted(
            m for m, e in manifest["modules"].items() if e.get("kind") != "c"
        )
        c = sorted(m for m, e in manifest["modules"].items() if e.get("kind") == "c")
        text = f"{len(mypyc)} modules with mypyc: {', '.join(mypyc)}"
        if c:
            text += f"; C: {', '.join(c)}"
        return paths, f"compiled ({text})"
    if stale is not None:
        print(
            f"msgin5g: not loading the compiled modules, {stale}: running pure Python "
            "(reinstall to compile again)",
            file=sys.stderr,
        )
        return {}, f"pure Python (compiled modules are stale: {stale})"
    return {}, "pure Python (no compiled modules installed)"


def install(package: Path) -> None:
    """Load the compiled modules of *package* (``msgin5g``'s directory) when they match."""
    global status, compiled
    if any(isinstance(f, _Finder) for f in sys.meta_path):
        return
    paths, status = choose(package, places())
    if paths:
        compiled = tuple(sorted(n for n in paths if n.startswith("msgin5g.")))
        sys.meta_path.insert(0, _Finder(paths))

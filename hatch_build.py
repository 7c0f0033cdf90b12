"""Compile msgin5g's hot path with mypyc when the wheel is built (docs/performance.md).

Hatchling runs :class:`NativeBuildHook` for ``pip install .`` and ``pip install -e .``.
It compiles the modules listed in pyproject.toml
(``[tool.hatch.build.targets.wheel.hooks.custom] compile``) with mypyc **out of the
source tree**, into the directory ``msgin5g_native`` of the wheel (beside the package in
site-packages), with a manifest holding the SHA-256 of each module's source.
``msgin5g/_native.py`` loads those compiled modules only while every listed source still
hashes the same, so an edited .py file is never shadowed by a stale extension module.

Pure Python, with one line saying why, when MSGIN5G_PURE=1 is set, when there is no C
compiler or no Python headers, or when mypyc fails. ``python hatch_build.py DIR``
compiles into DIR by hand (what the hook does, without pip).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import sysconfig
import time
import tomllib
from pathlib import Path
from typing import Any

try:
    from hatchling.builders.hooks.plugin.interface import BuildHookInterface
except ImportError:  # run by hand: only build() and main() are used
    BuildHookInterface = object  # type: ignore[assignment,misc]

NATIVE = "msgin5g_native"  # the directory of compiled modules (msgin5g/_native.py)
GROUP = f"{NATIVE}__mypyc"  # mypyc's shared library, imported by each module's shim
MANIFEST = "manifest.json"
# pip builds in an isolated environment that has none of the optional dependencies
# (cryptography, python-mbedtls, nats-py ...): the modules mypy follows from the
# compiled ones may import them. Those are not compiled, so their errors are not ours
# to report here (``mypy --strict`` over the whole tree does that, scripts/check), and
# a missing third-party module is typed Any rather than an error.
MYPY_FLAGS = ("--follow-imports=silent", "--ignore-missing-imports")


def _hook(root: Path) -> dict[str, Any]:
    data = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    hook: dict[str, Any] = data["tool"]["hatch"]["build"]["targets"]["wheel"]["hooks"][
        "custom"
    ]
    return hook


def configured_modules(root: Path) -> list[str]:
    """The dotted names of the modules to compile with mypyc (pyproject.toml)."""
    return list(_hook(root)["compile"])


def configured_extensions(root: Path) -> list[str]:
    """The dotted names of the C extension modules (``src/<path>.c``; pyproject.toml)."""
    return list(_hook(root).get("extensions", []))


def why_pure() -> str | None:
    """Why this machine builds pure Python, or None when it can compile."""
    if os.environ.get("MSGIN5G_PURE", "") not in ("", "0"):
        return "MSGIN5G_PURE is set"
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None:
        return f"no C compiler ({cc})"
    include = Path(sysconfig.get_paths()["include"])
    if not (include / "Python.h").is_file():
        return f"no Python headers ({include}/Python.h)"
    try:
        import mypyc.build  # noqa: F401
        import setuptools  # noqa: F401
    except ImportError as e:
        return f"mypyc or setuptools not importable ({e})"
    return None


def source_of(root: Path, module: str, suffix: str = ".py") -> Path:
    return root / "src" / (module.replace(".", "/") + suffix)


def build(
    root: Path,
    modules: list[str],
    out: Path,
    work: Path,
    c_modules: list[str] | None = None,
) -> float:
    """Compile *modules* (mypyc) and *c_modules* (C) into *out* (emptied first).

    Returns the seconds it took.
    """
    from mypyc.build import mypycify
    from setuptools import Distribution, Extension

    c_modules = c_modules or []

    start = time.monotonic()
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    sources = {m: source_of(root, m) for m in modules}
    sources.update({m: source_of(root, m, ".c") for m in c_modules})
    digests = {
        m: hashlib.sha256(p.read_bytes()).hexdigest() for m, p in sources.items()
    }
    here = os.getcwd()
    os.chdir(root)  # mypy reads [tool.mypy] from pyproject.toml here
    try:
        extensions = mypycify(
            [*MYPY_FLAGS, *(str(sources[m].relative_to(root)) for m in modules)],
            opt_level="3",
            group_name=NATIVE,
            target_dir=str(work / "c"),
        )
        extensions += [
            Extension(
                m,
                [str(sources[m].relative_to(root))],
                extra_compile_args=["-O2", "-std=gnu11"],
                extra_link_args=["-pthread"],
            )
            for m in c_modules
        ]
        dist = Distribution({"name": NATIVE, "ext_modules": extensions})
        cmd: Any = dist.get_command_obj("build_ext")
        cmd.build_lib = str(out)
        cmd.build_temp = str(work / "tmp")
        cmd.parallel = os.cpu_count() or 1
        dist.run_command("build_ext")
    finally:
        os.chdir(here)
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    files = {m: m.replace(".", "/") + suffix for m in [*modules, *c_modules]}
    missing = [f for f in [*files.values(), GROUP + suffix] if not (out / f).is_file()]
    if missing:
        raise RuntimeError(f"mypyc produced no {', '.join(missing)}")
    manifest = {
        "ext_suffix": suffix,
        "group": GROUP,
        "modules": {
            m: {
                "source": str(sources[m].relative_to(root / "src" / "msgin5g")),
                "sha256": digests[m],
                "file": files[m],
                **({"kind": "c"} if m in c_modules else {}),
            }
            for m in [*modules, *c_modules]
        },
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return time.monotonic() - start


class NativeBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        root = Path(self.root)
        reason = why_pure()
        if reason is None:
            out = root / "build" / NATIVE
            try:
                seconds = build(
                    root,
                    configured_modules(root),
                    out,
                    root / "build" / "mypyc",
                    configured_extensions(root),
                )
            except (Exception, SystemExit) as e:  # any failure: install pure Python
                # mypy's type errors end mypycify with SystemExit (its report is above)
                reason = f"mypyc failed: {type(e).__name__}: {e}"
            else:
                key = (
                    "force_include_editable"
                    if version == "editable"
                    else "force_include"
                )
                build_data[key][str(out)] = NATIVE
                if version != "editable":
                    # the editable wheel must keep the package's .pth file (py3-none-any)
                    build_data["pure_python"] = False
                    build_data["infer_tag"] = True
                print(
                    f"msgin5g: compiled {NATIVE} with mypyc in {seconds:.0f} s",
                    file=sys.stderr,
                )
                return
        print(
            f"msgin5g: installing pure Python, not compiled: {reason}", file=sys.stderr
        )


def main() -> None:
    root = Path(__file__).resolve().parent
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else root / "build" / NATIVE
    seconds = build(
        root,
        configured_modules(root),
        out.resolve(),
        root / "build" / "mypyc",
        configured_extensions(root),
    )
    print(f"compiled into {out} in {seconds:.0f} s")


if __name__ == "__main__":
    main()

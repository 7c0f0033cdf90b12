"""The compiled hot path (msgin5g._native): compiled modules load only while they match.

The choice is tested on real manifest files in a temporary directory; the loading
itself in fresh interpreters against the compiled modules of this install (skipped
when the install is pure Python, which scripts/test's compiled pass never is:
.ci/run sets MSGIN5G_EXPECT_COMPILED=1).
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
from importlib import import_module
from importlib.machinery import EXTENSION_SUFFIXES, ExtensionFileLoader
from pathlib import Path

import pytest

import msgin5g
from msgin5g import _native

PACKAGE = Path(msgin5g.__file__).parent
SUFFIX = EXTENSION_SUFFIXES[0]
# read on import: the autouse fixture clean_environ (tests/conftest.py) hides MSGIN5G_*
EXPECT_COMPILED = os.environ.get("MSGIN5G_EXPECT_COMPILED") == "1"


def _path(module: str, suffix: str) -> str:
    return module.replace(".", "/") + suffix


def _configured() -> list[str]:
    data = tomllib.loads((PACKAGE.parents[1] / "pyproject.toml").read_text())
    hook = data["tool"]["hatch"]["build"]["targets"]["wheel"]["hooks"]["custom"]
    return [*hook["compile"], *hook.get("extensions", [])]


def test_compiled_modules_are_the_ones_claimed() -> None:
    """With MSGIN5G_EXPECT_COMPILED=1 (CI), pure Python is a failure, not a skip."""
    if EXPECT_COMPILED:
        assert _native.status.startswith("compiled ("), _native.status
        assert sorted(_native.compiled) == sorted(_configured())
    for name in _native.compiled:
        module = import_module(name)
        assert isinstance(module.__loader__, ExtensionFileLoader), name
        assert module.__file__ is not None
        assert module.__file__.endswith(SUFFIX), module.__file__


def _manifest(place: Path, sha256: str, *, suffix: str = SUFFIX) -> None:
    place.mkdir()
    entry = {
        "source": "coap/numbers.py",
        "sha256": sha256,
        "file": "x/numbers" + suffix,
    }
    manifest = {
        "ext_suffix": suffix,
        "group": "g__mypyc",
        "modules": {"msgin5g.coap.numbers": entry},
    }
    (place / "manifest.json").write_text(json.dumps(manifest))


def _sha(relative: str) -> str:
    return hashlib.sha256((PACKAGE / relative).read_bytes()).hexdigest()


def test_unchanged_sources_load_the_built_files(tmp_path: Path) -> None:
    place = tmp_path / "msgin5g_native"
    _manifest(place, _sha("coap/numbers.py"))
    paths, status = _native.choose(PACKAGE, [place])
    assert paths == {
        "msgin5g.coap.numbers": str(place / ("x/numbers" + SUFFIX)),
        "g__mypyc": str(place / ("g__mypyc" + SUFFIX)),
    }
    assert status == "compiled (1 modules with mypyc: msgin5g.coap.numbers)"


def test_a_c_extension_is_named_apart_and_checked_like_the_others(
    tmp_path: Path,
) -> None:
    place = tmp_path / "msgin5g_native"
    _manifest(place, _sha("coap/numbers.py"))
    manifest = json.loads((place / "manifest.json").read_text())
    manifest["modules"]["msgin5g.coap._udpsend"] = {
        "source": "coap/_udpsend.c",
        "sha256": _sha("coap/_udpsend.c"),
        "file": "y/_udpsend" + SUFFIX,
        "kind": "c",
    }
    (place / "manifest.json").write_text(json.dumps(manifest))
    paths, status = _native.choose(PACKAGE, [place])
    assert paths["msgin5g.coap._udpsend"] == str(place / ("y/_udpsend" + SUFFIX))
    assert status == (
        "compiled (1 modules with mypyc: msgin5g.coap.numbers; C: msgin5g.coap._udpsend)"
    )
    manifest["modules"]["msgin5g.coap._udpsend"]["sha256"] = "0" * 64
    (place / "manifest.json").write_text(json.dumps(manifest))
    paths, status = _native.choose(PACKAGE, [place])
    assert paths == {}
    assert "msgin5g/coap/_udpsend.c changed since the build" in status


def test_an_edited_source_loads_python_with_one_warning_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stale, good = tmp_path / "a" / "msgin5g_native", tmp_path / "b" / "msgin5g_native"
    stale.parent.mkdir()
    good.parent.mkdir()
    _manifest(stale, "0" * 64)
    paths, status = _native.choose(PACKAGE, [stale])
    assert paths == {}
    assert status.startswith("pure Python (compiled modules are stale: ")
    assert "msgin5g/coap/numbers.py changed since the build" in status
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(
        "msgin5g: not loading the compiled modules, msgin5g/coap/numbers.py"
    )
    # a later, matching build on the path is still used, without a warning
    _manifest(good, _sha("coap/numbers.py"))
    paths, status = _native.choose(PACKAGE, [stale, good])
    assert "msgin5g.coap.numbers" in paths
    assert status.startswith("compiled (")


def test_a_build_for_another_python_is_not_loaded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    place = tmp_path / "msgin5g_native"
    _manifest(place, _sha("coap/numbers.py"), suffix=".cpython-27-x.so")
    paths, status = _native.choose(PACKAGE, [place])
    assert paths == {}
    assert "built for another Python" in status
    assert capsys.readouterr().err.count("\n") == 1


def test_msgin5g_pure_and_nothing_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    place = tmp_path / "msgin5g_native"
    _manifest(place, _sha("coap/numbers.py"))
    monkeypatch.setenv("MSGIN5G_PURE", "1")
    assert _native.choose(PACKAGE, [place]) == ({}, "pure Python (MSGIN5G_PURE is set)")
    monkeypatch.delenv("MSGIN5G_PURE")
    assert _native.choose(PACKAGE, []) == (
        {},
        "pure Python (no compiled modules installed)",
    )


_PROBE = """
import importlib, json, sys
import msgin5g._native as n
files = {m: importlib.import_module(m).__file__ for m in sys.argv[1:]}
print(json.dumps({"status": n.status, "files": files}))
"""


def _probe(package_copy: Path, modules: list[str]) -> tuple[dict[str, object], str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(package_copy.parent), *filter(None, [env.get("PYTHONPATH")])]
    )
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, *modules],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=True,
    )
    return json.loads(result.stdout), result.stderr


@pytest.mark.skipif(not _native.compiled, reason="this install runs pure Python")
def test_a_real_edit_is_never_shadowed_by_the_installed_build(tmp_path: Path) -> None:
    """A copy of the package: as is, compiled modules load; edited, the .py files do."""
    copy = tmp_path / "msgin5g"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    modules = list(_native.compiled)
    verdict, err = _probe(copy, modules)
    assert err == ""
    assert all(str(f).endswith(SUFFIX) for f in verdict["files"].values())  # type: ignore[attr-defined]

    edited = copy / "coap" / "message.py"
    edited.write_text(edited.read_text() + "\n# edited after the build\n")
    # a C extension has no .py to fall back to: pure Python runs without it
    python_modules = [m for m in modules if not (copy.parent / _path(m, ".c")).exists()]
    verdict, err = _probe(copy, python_modules)
    assert err.count("\n") == 1
    assert "msgin5g/coap/message.py changed since the build" in err
    assert str(verdict["status"]).startswith("pure Python (compiled modules are stale")
    files = verdict["files"]
    assert isinstance(files, dict)
    assert all(
        str(f).startswith(str(copy)) and str(f).endswith(".py") for f in files.values()
    )

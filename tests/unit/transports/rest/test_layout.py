"""The REST package has no import cycle: routers reach the context, not the app.

Issue 11: the routers imported ``RestContext`` from ``asgi.py``, which imports
them. They now import :mod:`msgin5g.transports.rest.context`, which imports
neither ``asgi`` nor a router.
"""

import ast
from pathlib import Path

from fastapi import FastAPI

import msgin5g.transports.rest as rest_package
from msgin5g.transports.rest import create_app

_PACKAGE = Path(rest_package.__file__).parent
_ROUTERS = (
    "msgs_asregistration",
    "msgs_msgdelivery",
    "msgs_topicsub",
    "msgg_bgdelivery",
    "ss_gm",
)


def _imports(module: str) -> set[str]:
    tree = ast.parse((_PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_routers_do_not_import_the_app_module() -> None:
    for router in _ROUTERS:
        imported = _imports(router)
        assert "msgin5g.transports.rest.asgi" not in imported, router
        assert "msgin5g.transports.rest.context" in imported, router


def test_context_imports_neither_the_app_nor_a_router() -> None:
    imported = _imports("context")
    banned = {f"msgin5g.transports.rest.{name}" for name in (*_ROUTERS, "asgi")}
    assert not imported & banned


def test_create_app_returns_the_fastapi_app_with_its_context(rig: object) -> None:
    app = rig.http._transport.app  # type: ignore[attr-defined]
    assert isinstance(app, FastAPI)
    assert app.state.ctx.service is rig.service  # type: ignore[attr-defined]
    assert create_app.__annotations__["return"] is FastAPI

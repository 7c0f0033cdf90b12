"""Fixtures of the storage conformance suite: every backend, the same tests.

Adding a backend (e.g. the cluster backend) is one :class:`BackendKind` entry in
:data:`BACKENDS`: every test taking ``backend`` or ``backend_factory`` then runs
against it too. Tests of one backend's internals (SQLite files, the writer
thread) live in their own modules and do not use these fixtures.
"""

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from msgin5g.storage import Backend, open_backend
from tests.storage.nats_server import nats_url


@dataclass(frozen=True)
class BackendKind:
    """One backend under test.

    Attributes:
        name: test id (``test_x[sqlite]``).
        url: the ``storage.url`` for a test's private directory; every backend
            a test opens uses the same url, so a reopened backend sees the data.
        persistent: whether data outlives ``aclose`` (tests of reopening skip
            otherwise).
        marks: pytest marks for every test of this kind (e.g. a skip when the
            backend's server is not available).
    """

    name: str
    url: Callable[[Path], str]
    persistent: bool
    marks: tuple[pytest.MarkDecorator, ...] = ()


BACKENDS = (
    BackendKind("memory", lambda _tmp: "memory:", persistent=False),
    BackendKind("sqlite", lambda tmp: f"sqlite:///{tmp / 'store.db'}", persistent=True),
    # a session nats-server (started on first use), a fresh stream/bucket prefix each
    BackendKind("nats", lambda _tmp: nats_url(SimpleNamespace()), persistent=True),
)


class BackendFactory:
    """Opens (and re-opens) started backends of one kind; closes them all at the end.

    Every backend opened by one factory uses the same url, so :meth:`reopen`
    shows what survived :meth:`~Backend.aclose`.
    """

    def __init__(self, kind: BackendKind, tmp_path: Path) -> None:
        self.kind = kind.name
        self.persistent = kind.persistent
        self.url = kind.url(tmp_path)
        self.opened: list[Backend] = []

    async def open(self) -> Backend:
        """A started backend of this kind."""
        backend = open_backend(self.url)
        await backend.start()
        self.opened.append(backend)
        return backend

    async def reopen(self, backend: Backend) -> Backend:
        """Close ``backend`` and open a new one on the same data (persistent only)."""
        if not self.persistent:
            pytest.skip(f"{self.kind} backend keeps nothing across close/reopen")
        await backend.aclose()
        return await self.open()

    async def aclose_all(self) -> None:
        for backend in self.opened:
            await backend.aclose()


@pytest.fixture(
    params=[pytest.param(kind, id=kind.name, marks=kind.marks) for kind in BACKENDS]
)
async def backend_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[BackendFactory]:
    """A factory of started backends of each kind in turn."""
    factory = BackendFactory(request.param, tmp_path)
    yield factory
    await factory.aclose_all()


@pytest.fixture
async def backend(backend_factory: BackendFactory) -> Backend:
    """A started, empty backend of each kind in :data:`BACKENDS`."""
    return await backend_factory.open()

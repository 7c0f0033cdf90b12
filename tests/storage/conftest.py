"""Fixtures of the storage conformance suite: every backend, the same tests."""

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from msgin5g.storage import Backend, open_backend
from tests.storage.nats_server import nats_url

BACKENDS = ["memory", "sqlite", "nats"]


class BackendFactory:
    """Opens (and re-opens) started backends of one kind; closes them all at the end.

    For ``sqlite`` every backend opened by one factory uses the same file, so
    :meth:`reopen` shows what survived :meth:`~Backend.aclose`.
    """

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.path = tmp_path / "store.db"
        self.opened: list[Backend] = []

    @property
    def persistent(self) -> bool:
        """Whether data outlives the backend object."""
        return self.kind != "memory"

    async def open(self) -> Backend:
        """A started backend of this kind."""
        url = "memory:" if self.kind == "memory" else f"sqlite:///{self.path}"
        if self.kind == "nats":
            url = nats_url(self)  # a session nats-server, a fresh prefix per factory
        backend = open_backend(url)
        await backend.start()
        self.opened.append(backend)
        return backend

    async def reopen(self, backend: Backend) -> Backend:
        """Close ``backend`` and open a new one on the same data (sqlite only)."""
        if not self.persistent:
            pytest.skip(f"{self.kind} backend keeps nothing across close/reopen")
        await backend.aclose()
        return await self.open()

    async def aclose_all(self) -> None:
        for backend in self.opened:
            await backend.aclose()


@pytest.fixture(params=BACKENDS)
async def backend_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[BackendFactory]:
    """A factory of started backends of each kind in turn."""
    factory = BackendFactory(request.param, tmp_path)
    yield factory
    await factory.aclose_all()


@pytest.fixture
async def backend(backend_factory: BackendFactory) -> Backend:
    """A started, empty backend (``memory`` or ``sqlite`` on a tmp_path file)."""
    return await backend_factory.open()

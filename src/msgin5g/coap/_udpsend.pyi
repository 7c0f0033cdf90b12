"""Stub of the C extension (src/msgin5g/coap/_udpsend.c)."""

from collections.abc import Callable
from typing import Any

class Sender:
    def __init__(
        self,
        fd: int,
        family: int,
        fallback: Callable[[bytes, Any], object],
        on_error: Callable[[int], object] | None = ...,
        schedule: Callable[[], object] | None = ...,
    ) -> None: ...
    def send(self, data: bytes, addr: Any) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...
    def stats(self) -> dict[str, int]: ...

"""Stub of the C extension (src/msgin5g/coap/_udpio.c)."""

from collections.abc import Callable
from typing import Any

class Socket:
    def __init__(
        self,
        fd: int,
        family: int,
        on_datagram: Callable[[bytes, Any], object],
        on_refused: Callable[[Any], object] | None,
        on_error: Callable[[int], object] | None,
        fallback: Callable[[bytes, Any], object],
    ) -> None: ...
    def read(self) -> None: ...
    def sendto(self, data: bytes, addr: Any) -> None: ...
    def poll_fileno(self) -> int: ...
    def close(self) -> None: ...
    def stats(self) -> dict[str, int]: ...

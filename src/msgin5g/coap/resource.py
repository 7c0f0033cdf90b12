"""The server role's resource tree: which handler serves which Uri-Path.

What: :class:`Site` maps Uri-Path prefixes and exact paths to a
:data:`Handler` and its allowed methods; :class:`Request` is what a handler
gets. :class:`~msgin5g.coap.endpoint.Endpoint` asks :meth:`Site.resolve` for
every dispatched request and answers the error code it returns itself.

RFC clauses:
    * §5.8 method handling: unknown Uri-Path -> 4.04 Not Found; method not
      allowed on the resource -> 4.05 Method Not Allowed.

Design choices:
    * Routes are matched on the raw Uri-Path *bytes* tuple, so no UTF-8
      decoding happens on the hot path (a path with invalid UTF-8 cannot match
      a route and gets 4.04).
    * An exact route always wins over a prefix route; among prefixes the
      longest wins.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from msgin5g.coap.address import Peer
from msgin5g.coap.message import CoapMessage
from msgin5g.coap.numbers import Code, OptionNumber

if TYPE_CHECKING:
    from msgin5g.coap.endpoint import Endpoint

__all__ = ["Handler", "Request", "Site"]

_URI_PATH = int(OptionNumber.URI_PATH)
_NOT_FOUND = int(Code.NOT_FOUND)
_METHOD_NOT_ALLOWED = int(Code.METHOD_NOT_ALLOWED)


@dataclass(slots=True)
class Request:
    """A request handed to a :data:`Handler`.

    Attributes:
        message: the decoded request.
        peer: the sender's address as the socket reported it.
        endpoint: the endpoint that received it (for ``accept_empty`` or for
            sending requests of its own).
    """

    message: CoapMessage
    peer: Peer
    endpoint: Endpoint

    @property
    def path(self) -> tuple[str, ...]:
        """The Uri-Path segments (UTF-8 decoded)."""
        return self.message.uri_path


Handler = Callable[[Request], Awaitable[CoapMessage]]
"""Serves one request; returns the response (its code, options and payload are
used; type, Message ID and token are set by the message layer)."""


class _Route:
    __slots__ = ("handler", "methods")

    def __init__(self, handler: Handler, methods: frozenset[int]) -> None:
        self.handler = handler
        self.methods = methods


class Site:
    """Routes requests to handlers by Uri-Path."""

    def __init__(self) -> None:
        self._exact: dict[tuple[bytes, ...], _Route] = {}
        self._prefixes: list[tuple[tuple[bytes, ...], _Route]] = []

    def add(
        self,
        path: tuple[str, ...],
        handler: Handler,
        *,
        methods: frozenset[int] = frozenset({Code.POST}),
        prefix: bool = False,
    ) -> None:
        """Register ``handler`` for ``path``.

        Args:
            path: the Uri-Path segments, e.g. ``("msgin5g",)``.
            handler: the coroutine function serving it.
            methods: allowed method codes; others get 4.05.
            prefix: also serve every path below ``path`` (longest prefix wins;
                an exact route always wins over a prefix route).
        """
        key = tuple(segment.encode() for segment in path)
        route = _Route(handler, frozenset(int(m) for m in methods))
        if prefix:
            self._prefixes = [p for p in self._prefixes if p[0] != key]
            self._prefixes.append((key, route))
            self._prefixes.sort(key=lambda p: len(p[0]), reverse=True)
        else:
            self._exact[key] = route

    def resolve(self, message: CoapMessage) -> Handler | int:
        """Return the handler for ``message``, or the error code to answer with."""
        path = tuple([v for n, v in message.options if n == _URI_PATH])
        route = self._exact.get(path)
        if route is None:
            for key, candidate in self._prefixes:
                if path[: len(key)] == key:
                    route = candidate
                    break
            else:
                return _NOT_FOUND
        if message.code not in route.methods:
            return _METHOD_NOT_ALLOWED
        return route.handler

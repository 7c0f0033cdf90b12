"""OSCORE for a device: a :class:`~msgin5g.client.transport.ClientTransport`
wrapper that protects everything the client sends and accepts only protected
requests from the server (RFC 8613; profile in ``msgin5g.oscore_profile``).

Use it with ``Client(..., oscore=True)`` (optionally ``oscore_state=PATH``) or
``msgin5g device ... --oscore``. The security context is derived from the
device's PSK_TOKEN; nothing else is provisioned.

Sequence numbers: with a state file, the Sender Sequence Number is reserved in
steps of :data:`STEP` (the file says "numbers below N may have been used",
written atomically and fsync'ed before any number >= the old N is sent), so a
restarted device never reuses a nonce (RFC 8613 Appendix B.1.1); after such a
restart the device no longer knows which of the server's requests it has seen
and answers the server's first request with a protected 4.01 + Echo (B.1.2).
Without a state file, numbering starts at 0 on every start: only for tests and
labs, and the server then refuses the restarted device's requests as replays
until its numbers pass the old ones (the CLI always uses a state file).

Errors: the server's unprotected refusals (4.01 "Security context not found",
4.00 "Decryption failed" …) become :class:`~msgin5g.coap.oscore.OscoreError`
with the server's code and diagnostic.
"""

import asyncio
import importlib.util
import json
import os
import tempfile
from pathlib import Path

from msgin5g.client.transport import ClientTransport, Serve
from msgin5g.coap.message import CoapMessage, make_response
from msgin5g.coap.oscore import (
    ECHO,
    EchoRequired,
    OscoreError,
    SecurityContext,
    SequenceExhausted,
    binding_of,
    inner_option,
    is_protected,
    protect_request,
    protect_response,
    request_option,
    unprotect_request,
    unprotect_response,
)
from msgin5g.errors import ConfigError
from msgin5g.oscore_profile import SERVER_SENDER_ID, ue_context

__all__ = ["STEP", "OscoreTransport"]

STEP = 1024
"""Sender Sequence Numbers reserved per state-file write."""
_UNAUTHORIZED = 0x81
_TEXT_PLAIN = (12, b"")


class OscoreTransport:
    """Protects a client's exchanges with its OSCORE context.

    Args:
        inner: the transport that carries the outer messages.
        ue_service_id: the UE.
        credential: its PSK_TOKEN (the Master Secret is derived from it).
        state_file: where the sequence reservation is kept (None: not kept).
    """

    def __init__(
        self,
        inner: ClientTransport,
        ue_service_id: str,
        credential: str,
        *,
        state_file: str | os.PathLike[str] | None = None,
    ) -> None:
        if importlib.util.find_spec("cryptography") is None:
            raise ConfigError(
                "OSCORE needs the 'cryptography' package: pip install 'msgin5g[oscore]'"
            )
        self._inner = inner
        self._state = Path(state_file) if state_file is not None else None
        start, restarted = self._load()
        self.context: SecurityContext = ue_context(
            ue_service_id,
            credential,
            sender_sequence=start,
            reserved_until=start if self._state is not None else None,
            window_known=not restarted,
        )
        self._lock = asyncio.Lock()

    def _load(self) -> tuple[int, bool]:
        """(first number to use, whether this is a restart)."""
        if self._state is None or not self._state.exists():
            return 0, False
        try:
            data = json.loads(self._state.read_text())
            return int(data["next"]), True
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"OSCORE state file {self._state} is unreadable ({exc}); do not "
                "delete it to recover: re-provision the device's credential instead"
            ) from exc

    def _store(self, until: int) -> None:
        assert self._state is not None  # noqa: S101 - only called with a state
        self._state.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self._state.parent, prefix=".oscore-")
        try:
            with os.fdopen(fd, "w") as out:
                json.dump({"next": until}, out)
                out.flush()
                os.fsync(out.fileno())
            Path(tmp).replace(self._state)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    async def _reserve(self) -> None:
        ctx = self.context
        if self._state is None or not ctx.reservation_needed(1):
            return
        async with self._lock:
            if ctx.reservation_needed(1):
                until = max(ctx.sender_sequence, ctx.reserved_until or 0) + STEP
                await asyncio.to_thread(self._store, until)
                ctx.reserve(until)

    # ClientTransport -------------------------------------------------------------

    async def open(self, serve: Serve) -> None:
        """Open the inner transport; the server's requests are verified first."""

        async def verified(message: CoapMessage) -> CoapMessage:
            return await self._serve(serve, message)

        await self._inner.open(verified)

    async def aclose(self) -> None:
        """Close the inner transport."""
        await self._inner.aclose()

    @property
    def local_address(self) -> tuple[str, int]:
        """Where the server reaches the client."""
        return self._inner.local_address

    async def request(
        self, message: CoapMessage, *, token: bytes | None = None
    ) -> CoapMessage:
        """Protect ``message``, send it, verify the answer (Echo handled).

        Raises:
            OscoreError: the server refused OSCORE or its answer does not verify.
        """
        plain = message
        for _ in range(2):
            await self._reserve()
            try:
                outer, binding = protect_request(self.context, plain)
            except SequenceExhausted:
                await self._reserve()
                outer, binding = protect_request(self.context, plain)
            response = await self._inner.request(outer, token=token)
            inner = unprotect_response(self.context, response, binding)
            echo = inner_option(inner, ECHO) if inner.code == _UNAUTHORIZED else None
            if echo is None:
                return inner
            plain = CoapMessage(
                message.mtype,
                message.code,
                message.mid,
                message.token,
                [*message.options, (ECHO, echo)],
                message.payload,
            )
            token = None
        return inner

    async def _serve(self, serve: Serve, message: CoapMessage) -> CoapMessage:
        """Verify a request of the server, let the client answer, protect it."""
        if not is_protected(message):
            return make_response(
                message,
                _UNAUTHORIZED,
                b"this UE accepts only OSCORE-protected requests",
                options=[_TEXT_PLAIN],
            )
        try:
            option = request_option(message)
            if option.kid != SERVER_SENDER_ID:
                raise OscoreError("Security context not found", _UNAUTHORIZED)
            try:
                inner, binding = unprotect_request(self.context, message, option)
            except EchoRequired as exc:
                await self._reserve()
                answer = make_response(
                    message, _UNAUTHORIZED, options=[(ECHO, exc.echo)]
                )
                return protect_response(
                    self.context, answer, binding_of(option), new_piv=True
                )
        except OscoreError as exc:
            return make_response(
                message, exc.code, exc.detail.encode(), options=[_TEXT_PLAIN]
            )
        return protect_response(self.context, await serve(inner), binding)

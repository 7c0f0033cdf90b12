"""A small scripted NEF for the callback flows (real HTTP on a free loopback port).

It answers the TS 29.122 requests msgin5g makes the way the YAML says (``201``
with ``Location`` and the created resource, ``204`` on DELETE), records every
request, and lets a test post notifications back to the server. With
``deliver_triggers`` it plays the network's part of device triggering in a lab:
the decoded ``triggerPayload`` goes to ``127.0.0.1:<applicationPortId>`` over
UDP (docs/nef.md), then a delivery report (``SUCCESS``) goes to the
``notificationDestination``. With ``broken`` every request gets a ``500`` with a
body that is not JSON.
"""

import base64
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx


class ScriptedNef:
    def __init__(self, *, deliver_triggers: bool = True, broken: bool = False) -> None:
        self.requests: list[tuple[str, str, dict[str, Any] | None]] = []
        self.report_answers: list[int | str] = []
        """The server's answers to trigger delivery reports."""
        self.deliver_triggers = deliver_triggers
        self.broken = broken
        self._lock = threading.Lock()
        self._count = 0
        nef = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _body(self) -> dict[str, Any] | None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                return json.loads(raw) if raw else None

            def do_POST(self) -> None:
                nef.handle(self, "POST", self._body())

            def do_DELETE(self) -> None:
                nef.handle(self, "DELETE", None)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def handle(
        self, handler: BaseHTTPRequestHandler, method: str, body: dict[str, Any] | None
    ) -> None:
        with self._lock:
            self.requests.append((method, handler.path, body))
            self._count += 1
            number = self._count
        if self.broken:
            self._answer(handler, 500, b"<html>upstream exploded</html>", "text/html")
            return
        if method == "DELETE":
            self._answer(handler, 204, b"", None)
            return
        location = f"{self.url}{handler.path}/{number}"
        created = dict(body or {}, self=location)
        if body is not None:  # tests find the resource URI in what was recorded
            body["self"] = location
        self._answer(
            handler,
            201,
            json.dumps(created).encode(),
            "application/json",
            {"Location": location},
        )
        if handler.path.endswith("/transactions") and self.deliver_triggers:
            threading.Thread(
                target=self._deliver_trigger, args=(body or {}, location), daemon=True
            ).start()

    @staticmethod
    def _answer(
        handler: BaseHTTPRequestHandler,
        status: int,
        body: bytes,
        ctype: str | None,
        headers: dict[str, str] | None = None,
    ) -> None:
        handler.send_response(status)
        if ctype:
            handler.send_header("Content-Type", ctype)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _deliver_trigger(self, body: dict[str, Any], transaction: str) -> None:
        payload = base64.b64decode(body["triggerPayload"])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(payload, ("127.0.0.1", int(body["applicationPortId"])))
        try:
            answer = httpx.post(
                body["notificationDestination"],
                json={"transaction": transaction, "result": "SUCCESS"},
                timeout=10,
            )
        except httpx.HTTPError as exc:  # the server may be stopping (teardown)
            self.report_answers.append(type(exc).__name__)
        else:
            self.report_answers.append(answer.status_code)

    def posted(self, suffix: str) -> list[dict[str, Any]]:
        with self._lock:
            return [
                b
                for m, p, b in self.requests
                if m == "POST" and p.endswith(suffix) and b
            ]

    def wait_posted(
        self, suffix: str, count: int, timeout: float = 30
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.posted(suffix)
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise AssertionError(f"NEF got {self.requests}, not {count} POSTs to *{suffix}")

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

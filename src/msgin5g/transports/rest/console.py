"""The operator web console: ``/console``, server-rendered HTML with htmx.

What: pages and HTML fragments rendered with Jinja2 (autoescaped) from the same
:class:`~.admin_api.AdminState` the admin API answers from; htmx (vendored in
``console_assets/static/htmx.min.js``, no CDN) swaps the fragments in and polls
the summary every 2 s. The rate chart is an inline SVG polyline built here.
Design and operations: docs/console.md.

**Login** (only with ``rest.oauth2`` on; with it off the console is open like
the APIs, for a loopback bind): ``GET /console/login`` is a form; ``POST
/console/login`` takes ``client_id`` / ``client_secret`` (form-encoded),
authenticates them like ``/oauth2/token`` (same throttle), requires the
``operator`` role, issues an ordinary bearer token and stores it in the cookie
``msgin5g_console`` (``HttpOnly; SameSite=Strict; Path=/console``, ``Secure``
over HTTPS or when ``rest.api_root`` is an ``https://`` URL (a TLS proxy),
``Max-Age`` = token lifetime). Every console route reads the
token from that cookie; a missing or expired one sends the browser to the
login form. ``POST /console/logout`` clears the cookie.

**CSRF**: state changes are POSTs only, and each needs the header
``X-CSRF-Token`` (htmx sends it from ``hx-headers`` on ``<body>``) or the form
member ``csrf``, equal to HMAC-SHA256(per-process key, session token) — a page
of another origin can neither read it nor, with ``SameSite=Strict``, send the
cookie. A POST that a browser marks as coming from another origin
(``Sec-Fetch-Site`` other than ``same-origin``; without that header, an
``Origin`` other than this host) is refused (403) before anything else; the
login form is checked the same way.

Headers on every page: a strict ``Content-Security-Policy`` (scripts and styles
from ``'self'`` only; htmx's eval and inline indicator styles are switched off
in its ``htmx-config``), ``X-Frame-Options: DENY``, ``Cache-Control:
no-store``, ``Referrer-Policy: same-origin`` (``no-referrer`` would make
Chromium send ``Origin: null`` on the login form).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.responses import HTMLResponse, RedirectResponse, Response

from msgin5g.model.application import ROLE_OPERATOR
from msgin5g.transports.rest.admin_api import AdminState
from msgin5g.transports.rest.context import RestContext

__all__ = ["CHART_WINDOW", "CONSOLE_ROOT", "COOKIE", "chart", "router"]

log = logging.getLogger(__name__)

CONSOLE_ROOT = "/console"
COOKIE = "msgin5g_console"
_ANONYMOUS = "anonymous"
_STATIC = {
    "htmx.min.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
}
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
_CHART_W, _CHART_H = 600, 120
CHART_WINDOW = 120.0
"""Seconds of history the rate chart shows."""


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("msgin5g.transports.rest", "console_assets/templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = _when
    env.filters["ago"] = _ago
    env.filters["octets"] = _octets
    return env


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "—"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(epoch: float | None) -> str:
    if epoch is None:
        return "never"
    seconds = max(0, int(time.time() - epoch))
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    return f"{seconds // 3600} h ago"


def _octets(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


def chart(series: list[dict[str, float]]) -> dict[str, Any]:
    """SVG polylines of the in/out rates over the last :data:`CHART_WINDOW` s.

    The newest sample is at the right edge; the vertical scale is the peak.
    """
    shown = [p for p in series if p["ago"] <= CHART_WINDOW]
    if not shown:
        return {"width": _CHART_W, "height": _CHART_H, "in": "", "out": "", "top": 0}
    top = max(1.0, max(max(p["in"], p["out"]) for p in shown))

    def line(key: str) -> str:
        points = []
        for p in shown:
            x = _CHART_W * (1 - p["ago"] / CHART_WINDOW)
            y = _CHART_H - 4 - (_CHART_H - 8) * p[key] / top
            points.append(f"{x:.1f},{y:.1f}")
        if len(points) == 1:  # one sample: a short flat stroke, visible
            last_x, last_y = points[0].split(",")
            points.insert(0, f"{float(last_x) - 4:.1f},{last_y}")
        return " ".join(points)

    return {
        "width": _CHART_W,
        "height": _CHART_H,
        "in": line("in"),
        "out": line("out"),
        "top": round(top, 1),
        "window": round(CHART_WINDOW),
    }


class _Session:
    """Who is looking at the console: the token (or anonymous) and its CSRF value."""

    def __init__(self, token: str, csrf: str) -> None:
        self.token = token
        self.csrf = csrf


def router(ctx: RestContext, admin: AdminState) -> APIRouter:  # noqa: C901, PLR0915
    """The routes of ``/console``."""
    routes = APIRouter(prefix=CONSOLE_ROOT, include_in_schema=False)
    env = _environment()
    key = secrets.token_bytes(32)
    view = admin.view
    static = resources.files("msgin5g.transports.rest") / "console_assets" / "static"

    def csrf_for(token: str) -> str:
        return hmac.new(key, token.encode(), hashlib.sha256).hexdigest()

    def session(request: Request) -> _Session | None:
        if not ctx.config.oauth2:
            return _Session(_ANONYMOUS, csrf_for(_ANONYMOUS))
        value = request.cookies.get(COOKIE)
        if not value:
            return None
        token = ctx.tokens.token_of("Bearer " + value)
        if token is None or not ctx.is_operator(token.client_id):
            return None
        return _Session(value, csrf_for(value))

    def render(name: str, status: int = 200, **values: Any) -> HTMLResponse:
        html = env.get_template(name).render(**values)
        return HTMLResponse(html, status_code=status, headers=_HEADERS)

    def to_login(request: Request) -> Response:
        if request.headers.get("hx-request"):
            # htmx follows HX-Redirect with a full page load
            return Response(status_code=200, headers={"HX-Redirect": "/console/login"})
        return RedirectResponse("/console/login", status_code=303)

    def cross_site(request: Request) -> bool:
        site = request.headers.get("sec-fetch-site")
        if site is not None:  # a browser that says where the request comes from
            return site not in {"same-origin", "none"}
        origin = request.headers.get("origin")
        if origin is None or origin == "null":
            return origin == "null"
        host = request.headers.get("host", "")
        return origin.split("://", 1)[-1].rstrip("/") != host

    async def form(request: Request) -> dict[str, str]:
        body = await request.body()
        parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        return {k: v[0] for k, v in parsed.items() if v}

    def forbidden(why: str) -> Response:
        log.warning("console: refused a POST: %s", why)
        return render("message.html", 403, title="Forbidden", text=why)

    async def checked_post(
        request: Request,
    ) -> tuple[_Session, dict[str, str]] | Response:
        if cross_site(request):
            return forbidden("cross-site request")
        who = session(request)
        if who is None:
            return to_login(request)
        fields = await form(request)
        sent = request.headers.get("x-csrf-token") or fields.get("csrf", "")
        if not hmac.compare_digest(sent.encode(), who.csrf.encode()):
            return forbidden("missing or wrong CSRF token")
        return who, fields

    @routes.get("")
    async def page(request: Request) -> Response:
        who = session(request)
        if who is None:
            return to_login(request)
        return render("console.html", csrf=who.csrf, oauth2=ctx.config.oauth2)

    @routes.get("/login")
    async def login_form(request: Request) -> Response:
        if not ctx.config.oauth2:
            return RedirectResponse("/console", status_code=303)
        return render("login.html", error=None)

    @routes.post("/login")
    async def login(request: Request) -> Response:
        if cross_site(request):
            return forbidden("cross-site request")
        if not ctx.config.oauth2:
            return RedirectResponse("/console", status_code=303)
        fields = await form(request)
        client_id = fields.get("client_id", "")
        secret = fields.get("client_secret", "")
        address = request.client.host if request.client else ""
        wait = ctx.throttle.retry_after(client_id, address)
        if wait:
            return render(
                "login.html", 429, error=f"Too many failed attempts: retry in {wait} s."
            )
        client = None
        if client_id and secret:
            client = await ctx.service.applications.authenticate(client_id, secret)
        if client is None:
            ctx.throttle.failed(client_id, address)
            log.warning("console login refused for %s from %s", client_id, address)
            return render("login.html", 401, error="Unknown client or wrong secret.")
        if client.role != ROLE_OPERATOR:
            log.warning("console login of non-operator %s refused", client_id)
            return render(
                "login.html", 403, error=f"{client_id} is not an operator client."
            )
        token, lifetime = await ctx.tokens.issue(client_id, client.scopes)
        log.info("console login of %s from %s", client_id, address)
        reply = RedirectResponse("/console", status_code=303)
        reply.set_cookie(
            COOKIE,
            token,
            max_age=lifetime,
            path=CONSOLE_ROOT,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https"
            or ctx.config.api_root.startswith("https://"),
        )
        return reply

    @routes.post("/logout")
    async def logout(request: Request) -> Response:
        checked = await checked_post(request)
        if isinstance(checked, Response):
            return checked
        reply = to_login(request)
        reply.delete_cookie(COOKIE, path=CONSOLE_ROOT, httponly=True, samesite="strict")
        return reply

    @routes.get("/static/{name}")
    async def asset(name: str) -> Response:
        media = _STATIC.get(name)
        if media is None:
            return Response(status_code=404)
        body = (static / name).read_bytes()
        return Response(
            body, media_type=media, headers={"Cache-Control": "max-age=3600"}
        )

    # fragments ---------------------------------------------------------------

    @routes.get("/panel/summary")
    async def summary(request: Request) -> Response:
        if session(request) is None:
            return to_login(request)
        body = admin.summary()
        return render("summary.html", s=body, chart=chart(body["series"]))

    @routes.get("/panel/ues")
    async def ues(request: Request, q: str = "") -> Response:
        if session(request) is None:
            return to_login(request)
        return render("ues.html", ues=view.search(q.strip(), 50), q=q)

    @routes.get("/panel/ue/{ue_service_id}")
    async def ue(request: Request, ue_service_id: str) -> Response:
        if session(request) is None:
            return to_login(request)
        found = await view.ue(ue_service_id)
        return render("ue.html", ue=found, ue_id=ue_service_id, notice=None)

    @routes.post("/ue/{ue_service_id}/discard")
    async def discard(request: Request, ue_service_id: str) -> Response:
        checked = await checked_post(request)
        if isinstance(checked, Response):
            return checked
        _, fields = checked
        message_id = fields.get("message_id", "")
        done = bool(message_id) and await view.discard(ue_service_id, message_id)
        notice = (
            f"Discarded {message_id}." if done else f"{message_id} is no longer stored."
        )
        log.info("console: %s for %s: %s", message_id, ue_service_id, notice)
        found = await view.ue(ue_service_id)
        reply = render("ue.html", ue=found, ue_id=ue_service_id, notice=notice)
        reply.headers["HX-Trigger"] = "ue-changed"  # list, summary, failures reload
        return reply

    @routes.get("/panel/{name}")
    async def panel(request: Request, name: str) -> Response:
        if session(request) is None:
            return to_login(request)
        if name == "groups":
            return render("groups.html", groups=await view.groups())
        if name == "areas":
            return render("areas.html", areas=await view.areas())
        if name == "gateways":
            return render("gateways.html", gateways=view.gateways())
        if name == "failures":
            return render("failures.html", failures=view.failures(50))
        return Response(status_code=404)

    return routes

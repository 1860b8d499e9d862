"""Who may use the dashboard: WSGI middleware in front of every route (pages, `/_dash-*`,
`/api/v1/...`, `/files/...`, `/thumbs/...`).

- With a token (any bind other than loopback needs one), every request must carry it: an
  ``Authorization: Bearer`` header, or the HttpOnly cookie that the login page sets. A
  ``?token=`` link is accepted on GET only, and only to set that cookie and redirect to the same
  address without the token (so it leaves the address bar and history); waitress writes no
  access log, so it is never logged. Tokens are compared in constant time.
- Every POST must come from the dashboard's own pages: a browser's Origin header, when sent,
  must name the host the request came to (a page elsewhere cannot press a control).
- Without a token (loopback only), the Host header must name a loopback address, so a page on
  another site cannot reach the dashboard by pointing a host name at 127.0.0.1.
- An address with a NUL byte (``%00``) answers 404 before any route sees it.
"""

from __future__ import annotations

import hmac
import html
import ipaddress
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlencode, urlsplit

from werkzeug.utils import redirect
from werkzeug.wrappers import Request, Response

TOKEN_COOKIE = "swapd_token"
LOGIN_PATH = "/login"

_LOGIN_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>swapd: sign in</title>
<style>body{{font:15px system-ui,sans-serif;background:#f4f6f9;display:grid;place-items:center;
height:100vh;margin:0}}form{{background:#fff;padding:28px 32px;border-radius:10px;
box-shadow:0 1px 3px #0002;min-width:340px}}input{{width:100%;padding:8px;margin:10px 0;
font:inherit}}button{{padding:8px 18px;font:inherit}}.bad{{color:#b91c1c}}</style></head>
<body><form method="post" action="/login"><h2>swapd dashboard</h2>
<p>This dashboard needs its access token (the <code>[dashboard] token</code> of swapd.toml,
or the token given to <code>swapd run</code>).</p>{problem}
<input type="password" name="token" autocomplete="current-password" autofocus
 placeholder="access token"><input type="hidden" name="next" value="{next}">
<button type="submit">Sign in</button></form></body></html>
"""


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


def _host_name(host_header: str) -> str:
    """'127.0.0.1:8050' -> '127.0.0.1'; '[::1]:8050' -> '::1'."""
    return urlsplit(f"//{host_header}").hostname or ""


def _safe_next(target: str | None) -> str:
    """Only a path on this server (never another site) to go to after signing in."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _malformed(environ: dict[str, Any]) -> bool:
    """An address no page or file has: a NUL byte (``%00``) in the path or the query."""
    return ("\x00" in environ.get("PATH_INFO", "")
            or "%00" in environ.get("QUERY_STRING", "").lower())


class AccessGate:
    """WSGI middleware: the rules in the module doc, in front of ``app``."""

    def __init__(self, app: Any, token: str | None) -> None:
        self.app = app
        self._token = token.encode() if token else None

    def _matches(self, candidate: str | None) -> bool:
        return (self._token is not None and candidate is not None
                and hmac.compare_digest(candidate.encode(), self._token))

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if _malformed(environ):  # answered here, quietly: no route ever sees it
            return Response("Not found: an address with a NUL byte names nothing here.\n",
                            status=404, mimetype="text/plain")(environ, start_response)
        request = Request(environ)
        refused = self._refusal(request)
        if refused is not None:
            return refused(environ, start_response)
        if self._token is None:
            return self.app(environ, start_response)
        if request.path == LOGIN_PATH:
            return self._login(request)(environ, start_response)
        if request.method in ("GET", "HEAD") and self._matches(request.args.get("token")):
            # remember the token in a cookie and take it out of the address bar and history
            rest = [(k, v) for k, v in request.args.items(multi=True) if k != "token"]
            location = request.script_root + request.path + (f"?{urlencode(rest)}" if rest
                                                             else "")
            return self._signed_in(request, location)(environ, start_response)
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        if ((scheme.lower() == "bearer" and self._matches(credentials.strip()))
                or self._matches(request.cookies.get(TOKEN_COOKIE))):
            return self.app(environ, start_response)
        return self._unauthorised(request)(environ, start_response)

    def _refusal(self, request: Request) -> Response | None:
        """403 for a cross-site POST, or (without a token) a non-loopback Host."""
        if self._token is None and not is_loopback(_host_name(request.host)):
            return Response("This dashboard answers only to 127.0.0.1 / localhost.\n",
                            status=403, mimetype="text/plain")
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            origin = request.headers.get("Origin")
            if origin is not None and (origin == "null" or urlsplit(origin).netloc.lower()
                                       != request.host.lower()):
                return Response("Refused: this request came from another site's page.\n",
                                status=403, mimetype="text/plain")
        return None

    def _signed_in(self, request: Request, location: str) -> Response:
        response = redirect(location, 303)
        assert self._token is not None
        response.set_cookie(TOKEN_COOKIE, self._token.decode(), httponly=True,
                            samesite="Strict", secure=request.is_secure, path="/")
        return response

    def _login(self, request: Request) -> Response:
        if request.method == "POST":
            if self._matches(request.form.get("token")):
                return self._signed_in(request, _safe_next(request.form.get("next")))
            return self._login_page("/", "That is not this dashboard's token.", 401)
        return self._login_page(_safe_next(request.args.get("next")), "", 200)

    @staticmethod
    def _login_page(target: str, problem: str, status: int) -> Response:
        text = _LOGIN_PAGE.format(
            next=html.escape(target, quote=True),
            problem=f'<p class="bad">{html.escape(problem)}</p>' if problem else "")
        return Response(text, status=status, mimetype="text/html")

    def _unauthorised(self, request: Request) -> Response:
        if request.method == "GET" and "text/html" in request.headers.get("Accept", ""):
            rest = [(k, v) for k, v in request.args.items(multi=True) if k != "token"]
            target = request.path + (f"?{urlencode(rest)}" if rest else "")
            return redirect(f"{LOGIN_PATH}?{urlencode({'next': target})}", 303)
        return Response(
            "This swapd dashboard needs its access token: sign in at /login, or send it as "
            "'Authorization: Bearer <token>'.\n", status=401, mimetype="text/plain",
            headers={"WWW-Authenticate": 'Bearer realm="swapd dashboard"'})

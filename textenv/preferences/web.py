"""``textenv label SAMPLES --out ANSWERS --web``: the labelling page in the browser.

A small Starlette app (served by uvicorn; ``pip install "textenv[web]"``) over the same
:class:`textenv.preferences.session.LabelSession` as the terminal labeller, so questions, answer
rows, resume and undo are the terminal's: the answers file is one that ``textenv rm train``
reads unchanged. The page (``web_static/``: one HTML, one script, one style sheet, shipped with
the package; nothing is fetched from the network) shows the prompt on top and the completions
side by side (pairs: click or ``1``/``2``, ``t`` tie) or in a list to rank (drag, or type the
numbers best first, then Enter); ``s`` skip, ``u`` undo; progress; a "done" screen.

Guarantees:

* **Durable**: an answer is appended and fsync-ed before the response that carries the next
  question is sent; a killed server loses nothing and a restart resumes at the first
  unanswered question (answers are matched by content hash; a changed samples file or mode is
  refused at start).
* **Several labellers**: each browser gets a labeller id in a cookie (``?labeller=NAME`` in the
  URL sets it); rows record it. With ``overlap`` = n each question is answered by n different
  labellers; a question shown to one labeller is held for them (``reserve_s``) so that two
  labellers are not given the same question when others are left.
* **Refusals write nothing**: an answer to an unknown question, to a question already answered
  (by this labeller, or by enough others), or from a page whose display order is not the
  server's (a stale page), gets HTTP 409; a malformed request 400; a non-JSON POST 415.
* **Safe**: completions are model output and the page only ever sets them as text
  (``textContent``), under a Content-Security-Policy that allows no inline script. The server
  binds 127.0.0.1 by default and then answers only requests whose ``Host`` is a loopback name
  (DNS rebinding); a non-local address needs ``allow_remote=True``, and then every request must
  carry a random token in its path (``/t/TOKEN/...``), printed with the URL.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import socket
import sys
import threading
import time
import webbrowser
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from textenv.preferences.records import Ranking
from textenv.preferences.session import LabelSession, Question

__all__ = ["LabelApp", "create_app", "BackgroundServer", "serve", "is_loopback"]

STATIC = Path(__file__).with_name("web_static")
COOKIE = "textenv_labeller"
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,40}$")
_ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/app.css": ("app.css", "text/css; charset=utf-8"),
}
_SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}
_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def is_loopback(host: str) -> bool:
    """Is ``host`` (a name or an address) this machine only?"""
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_of(header: str) -> str:
    """The host name of a ``Host`` header value (``[::1]:8765`` → ``::1``)."""
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class _Guard:
    """ASGI middleware: the token in the path, the Host check, and security headers."""

    def __init__(self, app: Any, token: str | None, local_only: bool) -> None:
        self.app, self.token, self.local_only = app, token, local_only

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.local_only:
            headers = dict(scope.get("headers") or [])
            host = _host_of(headers.get(b"host", b"").decode("latin-1"))
            if not is_loopback(host):
                await PlainTextResponse("not a local host name", 400)(scope, receive, send)
                return
        if self.token is not None:
            parts = scope["path"].split("/", 3)  # "", "t", TOKEN, rest
            ok = len(parts) >= 3 and parts[1] == "t"
            if not (ok and secrets.compare_digest(parts[2].encode(), self.token.encode())):
                await PlainTextResponse("missing or wrong token", 403)(scope, receive, send)
                return
            if len(parts) == 3:  # /t/TOKEN → /t/TOKEN/ so that relative URLs resolve
                await RedirectResponse(scope["path"] + "/", 307)(scope, receive, send)
                return
            rest = "/" + parts[3]
            scope = dict(scope, path=rest, raw_path=rest.encode())

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for k, v in _SECURITY_HEADERS.items():
                    headers.setdefault(k, v)
            await send(message)

        await self.app(scope, receive, send_with_headers)


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class LabelApp:
    """The state of a labelling page over a :class:`LabelSession`: per-labeller skips and
    undone questions (in memory: a skip lasts for the server's life, as in the terminal), and
    reservations (question → labeller, for ``reserve_s`` seconds)."""

    def __init__(self, session: LabelSession, *, reserve_s: float = 600.0) -> None:
        self.session = session
        self.reserve_s = float(reserve_s)
        self.lock = threading.Lock()
        # Per labeller id, created only when used (a cookie-less client gets a new id per request).
        self.skipped: dict[str, set[str]] = defaultdict(set)
        self.first: dict[str, str | None] = {}
        self.reserved: dict[str, tuple[str, float]] = {}

    # Every method below runs under ``self.lock``.

    def _reserved_by_others(self, labeller: str) -> set[str]:
        now = time.monotonic()
        return {
            qid
            for qid, (who, t) in self.reserved.items()
            if who != labeller and now - t < self.reserve_s
        }

    def _next(self, labeller: str) -> Question | None:
        s = self.session
        q = s.next_for(
            labeller,
            skip=self.skipped.get(labeller, ()),
            first=self.first.get(labeller),
            avoid=self._reserved_by_others(labeller),
        )
        now = time.monotonic()
        # Drop this labeller's hold and every expired one (at most one hold per labeller).
        for qid in [
            k
            for k, (who, t) in self.reserved.items()
            if who == labeller or now - t >= self.reserve_s
        ]:
            del self.reserved[qid]
        if q is not None:
            self.reserved[q.qid] = (labeller, now)
        return q

    def state(self, labeller: str) -> dict[str, Any]:
        """What the page shows ``labeller`` now: the next question (or done), progress."""
        q = self._next(labeller)
        progress = self.session.progress(labeller)
        question = None
        if q is not None:
            question = {
                "qid": q.qid,
                "item": q.item,
                "mode": q.mode,
                "prompt": q.prompt,
                "completions": q.shown_texts(),
                "shown": list(q.shown),
                "can_tie": q.mode == "pairs",
                "can_skip": True,
            }
        return {
            "labeller": labeller,
            "answers_file": self.session.path.name,
            "progress": progress,
            "can_undo": progress["mine"] > 0,
            "skipped": len(self.skipped.get(labeller, ())),
            "done": q is None,
            "question": question,
        }

    def _question(self, body: dict[str, Any], labeller: str, *, answering: bool) -> Question:
        qid = body.get("qid")
        if not isinstance(qid, str):
            raise _Refused(400, "'qid' must be a string")
        q = self.session.by_qid.get(qid)
        if q is None:
            raise _Refused(409, f"no question has id {qid!r}: reload the page")
        shown = body.get("shown")
        if shown != list(q.shown):
            raise _Refused(409, "the page is out of date (display order changed): reload it")
        if answering:
            why = self.session.refusal(qid, labeller)
            if why is not None:
                raise _Refused(409, why)
        return q

    def answer(self, body: dict[str, Any], labeller: str) -> dict[str, Any]:
        q = self._question(body, labeller, answering=True)
        order = body.get("order")
        if not isinstance(order, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) for d in order
        ):
            raise _Refused(400, "'order' must be a list of display numbers, best first")
        if len(order) == 1 and q.k == 2 and order[0] in (1, 2):
            order = [order[0], 3 - order[0]]
        if sorted(order) != list(range(1, q.k + 1)):
            raise _Refused(400, f"'order' must rank each of 1..{q.k} once, got {order}")
        self.session.answer(q, order, labeller)  # on disk (fsync'd) when this returns
        self.first[labeller] = None
        return self.state(labeller)

    def tie(self, body: dict[str, Any], labeller: str) -> dict[str, Any]:
        q = self._question(body, labeller, answering=True)
        if q.mode != "pairs":
            raise _Refused(400, "a ranking has no ties")
        self.session.tie(q, labeller)
        self.first[labeller] = None
        return self.state(labeller)

    def skip(self, body: dict[str, Any], labeller: str) -> dict[str, Any]:
        q = self._question(body, labeller, answering=False)
        self.skipped[labeller].add(q.qid)
        if self.first.get(labeller) == q.qid:
            self.first[labeller] = None
        return self.state(labeller)

    def unskip(self, labeller: str) -> dict[str, Any]:
        """Ask this labeller's skipped questions again."""
        self.skipped.pop(labeller, None)
        return self.state(labeller)

    def undo(self, labeller: str) -> dict[str, Any]:
        q = self.session.undo(labeller)
        if q is None:
            raise _Refused(409, "nothing to undo")
        self.skipped.get(labeller, set()).discard(q.qid)
        self.first[labeller] = q.qid  # asked again next
        return self.state(labeller)


def _labeller(request: Request) -> tuple[str, bool]:
    """The request's labeller id, and whether the cookie must be (re)set."""
    wanted = request.query_params.get("labeller")
    if wanted is not None and _NAME.match(wanted):
        return wanted, True
    have = request.cookies.get(COOKIE, "")
    if _NAME.match(have):
        return have, False
    return "l-" + secrets.token_hex(4), True


def create_app(
    session: LabelSession,
    *,
    token: str | None = None,
    local_only: bool = True,
    reserve_s: float = 600.0,
) -> Any:
    """The ASGI app of the labelling page (Starlette, wrapped by the token/Host guard)."""
    state = LabelApp(session, reserve_s=reserve_s)
    assets = {path: ((STATIC / name).read_bytes(), kind) for path, (name, kind) in _ASSETS.items()}

    def respond(request: Request, payload: Any, status: int = 200) -> Response:
        # The labeller id was decided once per request (a new one is random).
        labeller, set_cookie = request.state.labeller
        response = JSONResponse(payload, status)
        if set_cookie:
            response.set_cookie(
                COOKIE, labeller, max_age=365 * 86400, httponly=True, samesite="strict"
            )
        return response

    def asset(path: str) -> Any:
        body, kind = assets[path]

        async def endpoint(request: Request) -> Response:
            response = Response(body, media_type=kind)
            labeller, set_cookie = _labeller(request)
            if set_cookie:
                response.set_cookie(
                    COOKIE, labeller, max_age=365 * 86400, httponly=True, samesite="strict"
                )
            return response

        return endpoint

    async def get_state(request: Request) -> Response:
        request.state.labeller = _labeller(request)
        labeller = request.state.labeller[0]
        with state.lock:
            payload = state.state(labeller)
        return respond(request, payload)

    def action(name: str) -> Any:
        async def endpoint(request: Request) -> Response:
            request.state.labeller = _labeller(request)
            labeller = request.state.labeller[0]
            kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
            if kind != "application/json":
                return respond(request, {"error": "send JSON (application/json)"}, 415)
            try:
                body = await request.json()
            except ValueError:
                return respond(request, {"error": "the body is not valid JSON"}, 400)
            if not isinstance(body, dict):
                return respond(request, {"error": "the body must be a JSON object"}, 400)
            try:
                # The lock serialises answers: the check and the durable append are one step.
                with state.lock:
                    if name in ("undo", "unskip"):
                        payload = getattr(state, name)(labeller)
                    else:
                        payload = getattr(state, name)(body, labeller)
            except _Refused as exc:
                with state.lock:
                    current = state.state(labeller)
                return respond(request, {"error": str(exc), "state": current}, exc.status)
            return respond(request, payload)

        return endpoint

    routes = [Route(path, asset(path), methods=["GET"]) for path in _ASSETS]
    routes.append(Route("/api/state", get_state, methods=["GET"]))
    for name in ("answer", "tie", "skip", "unskip", "undo"):
        routes.append(Route(f"/api/{name}", action(name), methods=["POST"]))
    app = Starlette(routes=routes)
    app.state.label = state
    return _Guard(app, token, local_only)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise SystemExit(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(128)
    return sock


def _url(host: str, port: int, token: str | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/" + (f"t/{token}/" if token else "")


class BackgroundServer:
    """A labelling server on a background thread (a notebook; tests): ``url``, ``stop()``;
    also a context manager."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sock = _bind(host, port)
        self.port = self.sock.getsockname()[1]
        self.host = host
        token = getattr(app, "token", None)
        self.url = _url(host, self.port, token)
        config = uvicorn.Config(
            app, log_level="warning", lifespan="off", timeout_graceful_shutdown=2
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the labelling server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop serving (idempotent); open connections get 2 s to finish."""
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _open_browser(url: str) -> None:
    # A console browser (lynx, w3m) would take over the terminal the server prints to: open
    # one only where a graphical session is likely.
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        return
    try:
        webbrowser.open(url, new=2)
    except webbrowser.Error:
        pass


def serve(
    samples: str | Path | Sequence[Ranking],
    out: str | Path,
    *,
    mode: str = "auto",
    seed: int = 0,
    overlap: int = 1,
    host: str = "127.0.0.1",
    port: int = 8765,
    allow_remote: bool = False,
    open_browser: bool = True,
    reserve_s: float = 600.0,
) -> None:
    """Serve the labelling page until Ctrl-C (SIGINT/SIGTERM stop it cleanly; a kill loses
    nothing either). Prints the URL first; opens it in a browser where one is available."""
    local = is_loopback(host)
    if not local and not allow_remote:
        raise SystemExit(
            f"--host {host} is reachable from other machines: pass --allow-remote as well "
            "(every request then needs the random token printed in the URL)"
        )
    session = LabelSession(samples, out, mode=mode, seed=seed, overlap=overlap)
    token = None if local else secrets.token_urlsafe(18)
    app = create_app(session, token=token, local_only=local, reserve_s=reserve_s)
    sock = _bind(host, port)
    url = _url(host, sock.getsockname()[1], token)
    p = session.progress("")
    print(
        f"labelling {p['questions']} questions ({p['complete']} complete, {p['answers']} answers "
        f"in {session.path}); overlap {overlap}",
        flush=True,
    )
    print(f"labelling page: {url}", flush=True)
    if not local:
        print("(anyone with this URL can label; the token is required on every request)")
    print("Ctrl-C stops the server; every answer is already on disk.", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    if open_browser:
        threading.Timer(0.5, _open_browser, [url]).start()
    server.run(sockets=[sock])
    p = session.progress("")
    print(f"stopped: {p['answers']} answers in {session.path}", flush=True)

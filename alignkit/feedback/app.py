"""The labeling web app: a keyboard-first labeler page, an admin page, and the JSON API.

The pages are plain HTML + JS files served as they are (no build step); everything they
do goes through the JSON API below, which FastAPI documents at ``/docs`` and
``/openapi.json`` so a team can put its own front end on the same store.

Security model: each labeler has a personal random token (only its hash is stored) sent
as ``Authorization: Bearer <token>``; the personal link carries it in the URL fragment,
which browsers never send to the server or in a Referer. The admin API needs the admin
token. Item and completion text is model output: the pages insert it as text, never as
HTML, and a Content-Security-Policy forbids inline and third-party scripts (so ``/docs``
is a page of our own, not Swagger UI from a CDN). Requests whose ``Host`` header is not
one the app serves are refused, so a DNS-rebinding page cannot reach a local server.
See docs/security.md.
"""

from __future__ import annotations

import json
import random
import secrets
from collections.abc import Sequence
from importlib.resources import files
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from alignkit.feedback.admin import admin_summary
from alignkit.feedback.store import FeedbackError, FeedbackStore, Item, Labeler

MAX_BODY_BYTES = 64 * 1024  # a ranking is a few hundred bytes; refuse anything near this
LEASE_S = 15 * 60  # how long an item stays reserved for the labeler who has it on screen
STATUS = {"invalid": 422, "not_found": 404, "conflict": 409, "forbidden": 403}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
STATIC = files("alignkit.feedback") / "static"
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css"}


# -- API models ---------------------------------------------------------------------------


class ErrorBody(BaseModel):
    field: str = Field(description="What was wrong (e.g. 'ranks', 'item_id', 'authorization').")
    message: str = Field(description="One line: what was wrong and how to fix it.")


class ErrorOut(BaseModel):
    error: ErrorBody


class LabelerOut(BaseModel):
    id: int
    name: str
    kind: str
    ranked: int = Field(description="Items this labeler ranked (skips not counted).")
    skipped: int
    avoid_sensitive: bool = Field(description="Opted out of harmful prompts.")


class PreferencesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    avoid_sensitive: StrictBool = Field(description="true: never hand me harmful prompts.")


class CompletionOut(BaseModel):
    id: int = Field(description="Completion id: the key to use in `ranks` and `unsafe`.")
    text: str


class CriterionOut(BaseModel):
    name: str
    guideline: str


class ItemOut(BaseModel):
    id: int
    prompt: str
    criterion: str = Field(description="The first criterion (the only one in single-"
                           "criterion use).")
    guideline: str
    criteria: list[CriterionOut] = Field(description="Rank the completions once for each.")
    sensitive: bool = Field(description="A harmful request: show a content warning first.")
    completions: list[CompletionOut] = Field(
        description="In a random order fixed per labeler and item (position bias control)."
    )


class NextOut(BaseModel):
    item: ItemOut | None = Field(description="null when nothing is left for this labeler.")


class RankingIn(BaseModel):
    """One submission: ``ranks`` for a single-criterion item, or ``rankings`` with every
    criterion of the item; each maps every completion id to 1..K (1 = best)."""

    model_config = ConfigDict(extra="forbid")

    item_id: StrictInt
    # Keys stay strings here: the store refuses '01' next to '1' instead of merging them.
    ranks: dict[str, StrictInt] = Field(
        default_factory=dict,
        description="completion id -> rank; ties share a rank; empty when skipped.",
    )
    rankings: dict[str, dict[str, StrictInt]] | None = Field(
        None, description="criterion -> (completion id -> rank), one entry per criterion of "
        "the item (instead of `ranks`).")
    unsafe: dict[str, StrictBool] | None = Field(
        None, description="completion id -> true (unsafe) / false (safe), per completion.")
    skipped: StrictBool = False
    flagged_unsafe: StrictBool = False


class RankingCreated(BaseModel):
    id: int
    item_id: int


# -- the app --------------------------------------------------------------------------------


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``max_bytes`` with 413, before parsing.

    Checks Content-Length first, and also counts the bytes of bodies sent without one
    (chunked), buffering at most ``max_bytes``.
    """

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self._refuse(scope, receive, send)
            return
        if length is not None or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:
            msg = await receive()
            if msg["type"] != "http.request":
                return  # the client went away
            chunks.append(msg.get("body", b""))
            size += len(chunks[-1])
            more = msg.get("more_body", False)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
        body, replayed = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: dict, receive: Any, send: Any) -> None:
        response = _error(413, "body", f"request body over {self.max_bytes} bytes — send one "
                          "ranking per request")
        await response(scope, receive, send)


def _error(status: int, field: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"field": field, "message": message}}, status_code=status,
                        headers={**SECURITY_HEADERS, **(headers or {})})


class Unauthorized(Exception):
    def __init__(self, message: str) -> None:
        self.message = message


def _bearer(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def current_labeler(request: Request) -> Labeler:
    """The labeler whose token came with the request; 401 otherwise (nothing else runs)."""
    token = _bearer(request)
    if token is None:
        raise Unauthorized("missing labeler token — open your personal link, or send "
                           "'Authorization: Bearer <token>'")
    found = request.app.state.store.labeler_by_token(token)
    if found is None:
        raise Unauthorized("unknown labeler token — ask the admin for your personal link")
    return found


def require_admin(request: Request) -> None:
    expected = request.app.state.admin_token
    token = _bearer(request)
    # Bytes, not str: compare_digest raises on non-ASCII str (a 500 for a crafted header).
    if not expected or not token or not secrets.compare_digest(
            token.encode("utf-8", "surrogateescape"), expected.encode("utf-8")):
        raise Unauthorized("missing or wrong admin token — send 'Authorization: Bearer "
                           "<admin token>' (printed by `alignkit label serve`)")


Me = Annotated[Labeler, Depends(current_labeler)]


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for k, v in pairs:
        if k in seen:
            raise FeedbackError(f"key '{k}' appears twice in one JSON object — send each key "
                                "once", field=k)
        seen[k] = v
    return seen


async def strict_json(request: Request) -> None:
    """Refuse a body whose JSON repeats a key: parsers keep the last one silently, so a
    ranking could say two things and the duplicate check would only see one."""
    body = await request.body()
    try:
        json.loads(body, object_pairs_hook=_no_duplicate_keys)
    except FeedbackError:
        raise
    except (ValueError, RecursionError):
        return  # not JSON at all: FastAPI's own validation answers with a 422


def _item_out(item: Item, labeler: Labeler, guidelines: dict[str, str]) -> ItemOut:
    order = list(item.completions)
    random.Random(f"{labeler.id}:{item.id}").shuffle(order)
    return ItemOut(
        id=item.id, prompt=item.prompt, criterion=item.criterion,
        guideline=guidelines.get(item.criterion, ""),
        criteria=[CriterionOut(name=c, guideline=guidelines.get(c, "")) for c in item.criteria],
        sensitive=item.sensitive,
        completions=[CompletionOut(id=c.id, text=c.text) for c in order],
    )


def _host_name(host: str) -> str:
    """The host part of a Host header: 'a:8000' -> 'a', '[::1]:8000' -> '::1'."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def hosts_for(bind: str, extra: Sequence[str] = ()) -> list[str]:
    """The Host names to accept for a server bound to ``bind``: loopback, ``bind`` itself and
    ``extra``. Bound to every interface (0.0.0.0 / ::) with no ``extra`` names, any host is
    accepted ("*"): the names the network uses are unknown, and the API needs a token."""
    if bind in ("0.0.0.0", "::", ""):
        return [*LOOPBACK_HOSTS, *extra] if extra else ["*"]
    return [*LOOPBACK_HOSTS, bind, *extra]


class HostCheck:
    """ASGI middleware: 400 unless the Host header names a host this app serves.

    A page on evil.example can make a browser resolve its name to 127.0.0.1 (DNS
    rebinding) and then read the API as same-origin; it cannot make the browser send
    ``Host: 127.0.0.1``. ``"*"`` in ``allowed`` turns the check off.
    """

    def __init__(self, app: Any, allowed: Sequence[str]) -> None:
        self.app = app
        self.allowed = {_host_name(h) for h in allowed}

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and "*" not in self.allowed:
            raw = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            if _host_name(raw) not in self.allowed:
                response = _error(400, "host", f"host '{raw[:80]}' is not served here — open "
                                  "the app by the address `alignkit label serve` printed "
                                  "(or add it with --allowed-host)")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(
    store: FeedbackStore,
    admin_token: str | None = None,
    overlap: int = 3,
    round: int | None = None,
    lease_s: float = LEASE_S,
    max_body_bytes: int = MAX_BODY_BYTES,
    allowed_hosts: Sequence[str] = LOOPBACK_HOSTS,
) -> FastAPI:
    """The labeling app over ``store``. Without ``admin_token`` the admin API refuses all.

    ``allowed_hosts``: the names labelers' browsers use to reach the app (Host header);
    loopback by default, as the server listens on loopback by default.
    """
    app = FastAPI(
        title="alignkit labeling API",
        description="Rank model completions for RLHF. Authenticate with "
        "`Authorization: Bearer <your token>`. Every write is one transaction; a refused "
        "request writes nothing.",
        version="1",
        docs_url=None,  # Swagger UI loads from a CDN: blocked by our CSP, and offline anyway
        redoc_url=None,
    )
    app.state.store = store
    app.state.admin_token = admin_token
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(HostCheck, allowed=allowed_hosts)
    errors = {401: {"model": ErrorOut}, 422: {"model": ErrorOut}}

    @app.exception_handler(Unauthorized)
    async def _unauthorized(_: Request, exc: Unauthorized) -> JSONResponse:
        return _error(401, "authorization", exc.message, {"WWW-Authenticate": "Bearer"})

    @app.exception_handler(FeedbackError)
    async def _refused(_: Request, exc: FeedbackError) -> JSONResponse:
        return _error(STATUS.get(exc.code, 422), exc.field or "request", str(exc))

    @app.exception_handler(RequestValidationError)
    async def _malformed(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "malformed request"}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        field = ".".join(loc) or "body"
        return _error(422, field, f"{field}: {first.get('msg')} — send JSON like "
                      '{"item_id": 1, "ranks": {"11": 1, "12": 2}}')

    @app.middleware("http")
    async def _headers(request: Request, call_next: Any) -> Response:
        response = await call_next(request)
        for k, v in SECURITY_HEADERS.items():
            response.headers.setdefault(k, v)
        return response

    @app.get("/api/me", response_model=LabelerOut, responses=errors, tags=["labeler"])
    def me(lab: Me) -> LabelerOut:
        """Who the token belongs to and how much they have done."""
        return _me(lab)

    def _me(lab: Labeler) -> LabelerOut:
        mine = {r.item_id: r for r in store.rankings(round, labeler_id=lab.id)}.values()
        return LabelerOut(id=lab.id, name=lab.name, kind=lab.kind,
                          ranked=sum(not r.skipped for r in mine),
                          skipped=sum(r.skipped for r in mine),
                          avoid_sensitive=lab.avoid_sensitive)

    @app.put("/api/me/preferences", response_model=LabelerOut,
             responses={**errors, 413: {"model": ErrorOut}}, tags=["labeler"])
    def preferences(body: PreferencesIn, lab: Me) -> LabelerOut:
        """Opt out of (or back into) harmful prompts; takes effect with the next item."""
        return _me(store.set_avoid_sensitive(lab.id, body.avoid_sensitive))

    @app.get("/api/next", response_model=NextOut, responses=errors, tags=["labeler"])
    def next_item(lab: Me) -> NextOut:
        """The item to rank now: reserved for this labeler, the same one until submitted."""
        item = store.next_item_for(lab.id, overlap, lease_s=lease_s, round=round)
        if item is None:
            return NextOut(item=None)
        return NextOut(item=_item_out(item, lab, store.guidelines(item.criteria)))

    @app.post(
        "/api/rankings", status_code=201, response_model=RankingCreated, tags=["labeler"],
        responses={**errors, 403: {"model": ErrorOut}, 404: {"model": ErrorOut},
                   409: {"model": ErrorOut}, 413: {"model": ErrorOut}},
        dependencies=[Depends(strict_json)],
    )
    def submit(body: RankingIn, lab: Me) -> RankingCreated:
        """Rank (or skip, or flag) the item handed out by ``/api/next``; once per item."""
        rid = store.submit_ranking(lab.id, body.item_id, body.ranks, skipped=body.skipped,
                                   flagged_unsafe=body.flagged_unsafe, require_assignment=True,
                                   by_criterion=body.rankings, unsafe=body.unsafe)
        return RankingCreated(id=rid, item_id=body.item_id)

    @app.get("/api/admin/summary", responses=errors, tags=["admin"],
             dependencies=[Depends(require_admin)])
    def summary() -> dict:
        """Progress, throughput, per-labeler statistics, agreement, most disputed items."""
        return admin_summary(store, overlap, round)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict:
        return {"ok": True}

    def page(name: str) -> HTMLResponse:
        return HTMLResponse((STATIC / name).read_text(encoding="utf-8"),
                            headers=SECURITY_HEADERS)

    @app.get("/", include_in_schema=False)
    def index() -> HTMLResponse:
        return page("index.html")

    @app.get("/label", include_in_schema=False)
    def label_page() -> HTMLResponse:
        return page("labeler.html")

    @app.get("/admin", include_in_schema=False)
    def admin_page() -> HTMLResponse:
        return page("admin.html")

    @app.get("/docs", include_in_schema=False)
    def docs_page() -> HTMLResponse:
        """The API reference, rendered from /openapi.json by a script served from here."""
        return page("docs.html")

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        suffix = name[name.rfind("."):] if "." in name else ""
        resource = STATIC / name
        if "/" in name or ".." in name or suffix not in STATIC_TYPES or not resource.is_file():
            return _error(404, "path", f"no static file '{name}'")
        return Response(resource.read_text(encoding="utf-8"), media_type=STATIC_TYPES[suffix],
                        headers=SECURITY_HEADERS)

    return app

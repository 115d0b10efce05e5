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

import random
import secrets
from collections.abc import Sequence
from importlib.resources import files
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from alignkit.feedback.admin import admin_summary
from alignkit.feedback.api_models import (
    CompletionOut,
    CriterionOut,
    ErrorOut,
    ItemOut,
    LabelerOut,
    NextOut,
    PreferencesIn,
    RankingCreated,
    RankingIn,
)
from alignkit.feedback.middleware import (
    SECURITY_HEADERS,
    BodyLimit,
    HostCheck,
    error_response,
    strict_json,
)
from alignkit.feedback.store import FeedbackError, FeedbackStore, Item, Labeler

MAX_BODY_BYTES = 64 * 1024  # a ranking is a few hundred bytes; refuse anything near this
LEASE_S = 15 * 60  # how long an item stays reserved for the labeler who has it on screen
STATUS = {"invalid": 422, "not_found": 404, "conflict": 409, "forbidden": 403}
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
STATIC = files("alignkit.feedback") / "static"
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css"}



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


def hosts_for(bind: str, extra: Sequence[str] = ()) -> list[str]:
    """The Host names to accept for a server bound to ``bind``: loopback, ``bind`` itself and
    ``extra``. Bound to every interface (0.0.0.0 / ::) with no ``extra`` names, any host is
    accepted ("*"): the names the network uses are unknown, and the API needs a token."""
    if bind in ("0.0.0.0", "::", ""):
        return [*LOOPBACK_HOSTS, *extra] if extra else ["*"]
    return [*LOOPBACK_HOSTS, bind, *extra]


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
    _add_error_handlers(app)
    _add_labeler_api(app, store, overlap, round, lease_s)

    @app.get("/api/admin/summary", responses=ERRORS, tags=["admin"],
             dependencies=[Depends(require_admin)])
    def summary() -> dict:
        """Progress, throughput, per-labeler statistics, agreement, most disputed items."""
        return admin_summary(store, overlap, round)

    _add_pages(app)
    return app


ERRORS: dict[int | str, dict[str, Any]] = {401: {"model": ErrorOut}, 422: {"model": ErrorOut}}


def _add_error_handlers(app: FastAPI) -> None:
    """Every refusal in one shape, ``{"error": {"field", "message"}}``, and the security
    headers on every answer."""

    @app.exception_handler(Unauthorized)
    async def _unauthorized(_: Request, exc: Unauthorized) -> JSONResponse:
        return error_response(401, "authorization", exc.message, {"WWW-Authenticate": "Bearer"})

    @app.exception_handler(FeedbackError)
    async def _refused(_: Request, exc: FeedbackError) -> JSONResponse:
        return error_response(STATUS.get(exc.code, 422), exc.field or "request", str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Unknown routes and methods answer in the same shape as every other refusal.
        field = {404: "path", 405: "method"}.get(exc.status_code, "request")
        return error_response(exc.status_code, field, f"{exc.detail} — see /docs for the API",
                              dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _malformed(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "malformed request"}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        field = ".".join(loc) or "body"
        return error_response(422, field, f"{field}: {first.get('msg')} — send JSON like "
                              '{"item_id": 1, "ranks": {"11": 1, "12": 2}}')

    @app.middleware("http")
    async def _headers(request: Request, call_next: Any) -> Response:
        response = await call_next(request)
        for k, v in SECURITY_HEADERS.items():
            response.headers.setdefault(k, v)
        return response


def _add_labeler_api(app: FastAPI, store: FeedbackStore, overlap: int, round: int | None,
                     lease_s: float) -> None:
    """What a labeler's page calls: who am I, my preferences, my next item, my ranking."""

    def me_out(lab: Labeler) -> LabelerOut:
        mine = {r.item_id: r for r in store.rankings(round, labeler_id=lab.id)}.values()
        return LabelerOut(id=lab.id, name=lab.name, kind=lab.kind,
                          ranked=sum(not r.skipped for r in mine),
                          skipped=sum(r.skipped for r in mine),
                          avoid_sensitive=lab.avoid_sensitive)

    @app.get("/api/me", response_model=LabelerOut, responses=ERRORS, tags=["labeler"])
    def me(lab: Me) -> LabelerOut:
        """Who the token belongs to and how much they have done."""
        return me_out(lab)

    @app.put("/api/me/preferences", response_model=LabelerOut,
             responses={**ERRORS, 413: {"model": ErrorOut}}, tags=["labeler"])
    def preferences(body: PreferencesIn, lab: Me) -> LabelerOut:
        """Opt out of (or back into) harmful prompts; takes effect with the next item."""
        return me_out(store.set_avoid_sensitive(lab.id, body.avoid_sensitive))

    @app.get("/api/next", response_model=NextOut, responses=ERRORS, tags=["labeler"])
    def next_item(lab: Me) -> NextOut:
        """The item to rank now: reserved for this labeler, the same one until submitted."""
        item = store.next_item_for(lab.id, overlap, lease_s=lease_s, round=round)
        if item is None:
            return NextOut(item=None)
        return NextOut(item=_item_out(item, lab, store.guidelines(item.criteria)))

    @app.post(
        "/api/rankings", status_code=201, response_model=RankingCreated, tags=["labeler"],
        responses={**ERRORS, 403: {"model": ErrorOut}, 404: {"model": ErrorOut},
                   409: {"model": ErrorOut}, 413: {"model": ErrorOut}},
        dependencies=[Depends(strict_json)],
    )
    def submit(body: RankingIn, lab: Me) -> RankingCreated:
        """Rank (or skip, or flag) the item handed out by ``/api/next``; once per item."""
        rid = store.submit_ranking(lab.id, body.item_id, body.ranks, skipped=body.skipped,
                                   flagged_unsafe=body.flagged_unsafe, require_assignment=True,
                                   by_criterion=body.rankings, unsafe=body.unsafe)
        return RankingCreated(id=rid, item_id=body.item_id)


def _add_pages(app: FastAPI) -> None:
    """The HTML pages and their static files, served as they are (no build step)."""

    def page(name: str) -> HTMLResponse:
        return HTMLResponse((STATIC / name).read_text(encoding="utf-8"),
                            headers=SECURITY_HEADERS)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict:
        return {"ok": True}

    def serve(name: str) -> Any:
        def endpoint() -> HTMLResponse:  # no parameters: nothing from the request picks a file
            return page(name)
        return endpoint

    for path, name in (("/", "index.html"), ("/label", "labeler.html"),
                       ("/admin", "admin.html"), ("/docs", "docs.html")):
        # /docs: the API reference, rendered from /openapi.json by a script served from here.
        app.add_api_route(path, serve(name), methods=["GET"], include_in_schema=False,
                          response_class=HTMLResponse)

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        suffix = name[name.rfind("."):] if "." in name else ""
        resource = STATIC / name
        if "/" in name or ".." in name or suffix not in STATIC_TYPES or not resource.is_file():
            return error_response(404, "path", f"no static file '{name}'")
        return Response(resource.read_text(encoding="utf-8"), media_type=STATIC_TYPES[suffix],
                        headers=SECURITY_HEADERS)

"""The labeling web app: a keyboard-first labeler page, an admin page, and the JSON API.

The pages are plain HTML + JS files served as they are (no build step); everything they
do goes through the JSON API below, which FastAPI documents at ``/docs`` and
``/openapi.json`` so a team can put its own front end on the same store.

Security model: each labeler has a personal random token (only its hash is stored) sent
as ``Authorization: Bearer <token>``; the personal link carries it in the URL fragment,
which browsers never send to the server or in a Referer. The admin API needs the admin
token. Item and completion text is model output: the pages insert it as text, never as
HTML, and a Content-Security-Policy forbids inline and third-party scripts.
"""

from __future__ import annotations

import random
import secrets
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


class CompletionOut(BaseModel):
    id: int = Field(description="Completion id: the key to use in `ranks`.")
    text: str


class ItemOut(BaseModel):
    id: int
    prompt: str
    criterion: str
    guideline: str
    completions: list[CompletionOut] = Field(
        description="In a random order fixed per labeler and item (position bias control)."
    )


class NextOut(BaseModel):
    item: ItemOut | None = Field(description="null when nothing is left for this labeler.")


class RankingIn(BaseModel):
    """One submission. ``ranks`` maps every completion id of the item to 1..K (1 = best)."""

    model_config = ConfigDict(extra="forbid")

    item_id: StrictInt
    ranks: dict[int, StrictInt] = Field(
        default_factory=dict,
        description="completion id -> rank; ties share a rank; empty when skipped.",
    )
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
    if not expected or not token or not secrets.compare_digest(token, expected):
        raise Unauthorized("missing or wrong admin token — send 'Authorization: Bearer "
                           "<admin token>' (printed by `alignkit label serve`)")


Me = Annotated[Labeler, Depends(current_labeler)]


def _item_out(item: Item, labeler: Labeler, guideline: str) -> ItemOut:
    order = list(item.completions)
    random.Random(f"{labeler.id}:{item.id}").shuffle(order)
    return ItemOut(
        id=item.id, prompt=item.prompt, criterion=item.criterion, guideline=guideline,
        completions=[CompletionOut(id=c.id, text=c.text) for c in order],
    )


def create_app(
    store: FeedbackStore,
    admin_token: str | None = None,
    overlap: int = 3,
    round: int | None = None,
    lease_s: float = LEASE_S,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> FastAPI:
    """The labeling app over ``store``. Without ``admin_token`` the admin API refuses all."""
    app = FastAPI(
        title="alignkit labeling API",
        description="Rank model completions for RLHF. Authenticate with "
        "`Authorization: Bearer <your token>`. Every write is one transaction; a refused "
        "request writes nothing.",
        version="1",
    )
    app.state.store = store
    app.state.admin_token = admin_token
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
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
        mine = store.rankings(round, labeler_id=lab.id)
        return LabelerOut(id=lab.id, name=lab.name, kind=lab.kind,
                          ranked=sum(not r.skipped for r in mine),
                          skipped=sum(r.skipped for r in mine))

    @app.get("/api/next", response_model=NextOut, responses=errors, tags=["labeler"])
    def next_item(lab: Me) -> NextOut:
        """The item to rank now: reserved for this labeler, the same one until submitted."""
        item = store.next_item_for(lab.id, overlap, lease_s=lease_s, round=round)
        if item is None:
            return NextOut(item=None)
        return NextOut(item=_item_out(item, lab, store.guideline(item.criterion)))

    @app.post(
        "/api/rankings", status_code=201, response_model=RankingCreated, tags=["labeler"],
        responses={**errors, 403: {"model": ErrorOut}, 404: {"model": ErrorOut},
                   409: {"model": ErrorOut}, 413: {"model": ErrorOut}},
    )
    def submit(body: RankingIn, lab: Me) -> RankingCreated:
        """Rank (or skip, or flag) the item handed out by ``/api/next``; once per item."""
        rid = store.submit_ranking(lab.id, body.item_id, body.ranks, skipped=body.skipped,
                                   flagged_unsafe=body.flagged_unsafe, require_assignment=True)
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

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        suffix = name[name.rfind("."):] if "." in name else ""
        resource = STATIC / name
        if "/" in name or ".." in name or suffix not in STATIC_TYPES or not resource.is_file():
            return _error(404, "path", f"no static file '{name}'")
        return Response(resource.read_text(encoding="utf-8"), media_type=STATIC_TYPES[suffix],
                        headers=SECURITY_HEADERS)

    return app

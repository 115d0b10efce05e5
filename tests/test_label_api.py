"""The labeling JSON API: authentication, validation, nothing written on refusal."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from alignkit.feedback.app import create_app
from alignkit.feedback.store import FeedbackStore

ITEMS = [
    ("Name a fruit.", ["Apple.", "A car.", "Banana."]),
    ("What colour is the sky?", ["Blue.", "Loud."]),
]


@pytest.fixture
def env(tmp_path):
    store = FeedbackStore(f"sqlite:///{tmp_path}/f.db")
    store.add_items(ITEMS, "helpfulness", guideline="Prefer correct, useful answers.")
    _, alice = store.add_labeler("alice")
    _, bob = store.add_labeler("bob")
    client = TestClient(create_app(store, admin_token="admin-secret", overlap=2),
                        base_url="http://127.0.0.1")
    yield store, client, {"Authorization": f"Bearer {alice}"}, {"Authorization": f"Bearer {bob}"}
    store.close()


def rankings_in_db(store: FeedbackStore) -> int:
    with store.engine.connect() as c:
        return c.execute(text("SELECT COUNT(*) FROM rankings")).scalar_one()


def test_missing_or_unknown_token_is_401_and_writes_nothing(env):
    store, client, alice, _ = env
    item = client.get("/api/next", headers=alice).json()["item"]
    body = {"item_id": item["id"], "ranks": {str(c["id"]): 1 for c in item["completions"]}}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"},
                    {"Authorization": "Bearer admin-secret"}):
        for method, path in (("get", "/api/me"), ("get", "/api/next"),
                             ("post", "/api/rankings")):
            r = client.request(method, path, headers=headers,
                               json=body if method == "post" else None)
            assert r.status_code == 401, (headers, path)
            assert r.json()["error"]["field"] == "authorization"
            assert r.headers["www-authenticate"] == "Bearer"
    # The admin API needs the admin token, not a labeler's.
    assert client.get("/api/admin/summary", headers=alice).status_code == 401
    assert client.get("/api/admin/summary").status_code == 401
    ok = client.get("/api/admin/summary", headers={"Authorization": "Bearer admin-secret"})
    assert ok.status_code == 200 and ok.json()["progress"]["items"] == 2
    assert rankings_in_db(store) == 0


def test_admin_disabled_without_admin_token(tmp_path):
    store = FeedbackStore(f"sqlite:///{tmp_path}/f.db")
    client = TestClient(create_app(store), base_url="http://127.0.0.1")
    assert client.get("/api/admin/summary", headers={"Authorization": "Bearer "}).status_code == 401
    assert client.get("/api/admin/summary",
                      headers={"Authorization": "Bearer None"}).status_code == 401


def test_labeler_flow(env):
    store, client, alice, bob = env
    me = client.get("/api/me", headers=alice).json()
    assert me == {"id": 1, "name": "alice", "kind": "human", "ranked": 0, "skipped": 0,
                  "avoid_sensitive": False}
    item = client.get("/api/next", headers=alice).json()["item"]
    assert item["criterion"] == "helpfulness"
    assert item["guideline"] == "Prefer correct, useful answers."
    assert client.get("/api/next", headers=alice).json()["item"]["id"] == item["id"]  # reload
    assert client.get("/api/next", headers=bob).json()["item"]["id"] == item["id"]  # overlap 2
    ranks = {str(c["id"]): i + 1 for i, c in enumerate(item["completions"])}
    r = client.post("/api/rankings", headers=alice,
                    json={"item_id": item["id"], "ranks": ranks, "flagged_unsafe": True})
    assert r.status_code == 201 and r.json()["item_id"] == item["id"]
    (stored,) = store.rankings()
    assert stored.labeler.name == "alice" and stored.flagged_unsafe
    assert stored.ranks == {int(k): v for k, v in ranks.items()}
    nxt = client.get("/api/next", headers=alice).json()["item"]
    assert nxt["id"] != item["id"]
    assert client.post("/api/rankings", headers=alice,
                       json={"item_id": nxt["id"], "skipped": True}).status_code == 201
    assert client.get("/api/next", headers=alice).json() == {"item": None}
    assert client.get("/api/me", headers=alice).json()["ranked"] == 1


def test_malformed_submissions_are_clear_4xx_and_write_nothing(env):
    store, client, alice, bob = env
    item = client.get("/api/next", headers=alice).json()["item"]
    ids = [str(c["id"]) for c in item["completions"]]
    good = {ids[0]: 1, ids[1]: 2, ids[2]: 3}
    cases = [
        (422, "ranks", {"item_id": item["id"], "ranks": {ids[0]: 1}}),  # not all completions
        (422, "ranks", {"item_id": item["id"], "ranks": {**good, "999": 1}}),  # unknown id
        (422, "ranks", {"item_id": item["id"], "ranks": {**good, ids[0]: 4}}),  # out of 1..K
        (422, "ranks", {"item_id": item["id"], "ranks": {**good, ids[0]: 0}}),
        (422, f"ranks.{ids[0]}", {"item_id": item["id"], "ranks": {**good, ids[0]: "1"}}),
        (422, f"ranks.{ids[0]}", {"item_id": item["id"], "ranks": {**good, ids[0]: 1.5}}),
        (422, "ranks", {"item_id": item["id"], "ranks": good, "skipped": True}),
        (422, "item_id", {"ranks": good}),  # missing
        (422, "item_id", {"item_id": "one", "ranks": good}),
        (422, "extra", {"item_id": item["id"], "ranks": good, "extra": 1}),
        (404, "item_id", {"item_id": 999, "ranks": good}),
        (403, "item_id", {"item_id": item["id"] + 1, "ranks": {"4": 1, "5": 2}}),  # not handed
    ]
    for status, field, body in cases:
        r = client.post("/api/rankings", headers=alice, json=body)
        assert r.status_code == status, (body, r.text)
        err = r.json()["error"]
        assert err["field"] == field and err["message"] and "\n" not in err["message"]
    for raw in (b"{not json", b"[1, 2]", b""):
        r = client.post("/api/rankings", headers={**alice, "Content-Type": "application/json"},
                        content=raw)
        assert r.status_code == 422 and "error" in r.json()
    big = b'{"item_id": 1, "ranks": {}, "pad": "' + b"x" * 70_000 + b'"}'
    r = client.post("/api/rankings", headers={**alice, "Content-Type": "application/json"},
                    content=big)
    assert r.status_code == 413 and r.json()["error"]["field"] == "body"

    def chunks():  # no Content-Length: the limit counts the bytes as they arrive
        for _ in range(10):
            yield b"x" * 10_000

    r = client.post("/api/rankings", headers=alice, content=chunks())
    assert r.status_code == 413
    assert rankings_in_db(store) == 0

    assert client.post("/api/rankings", headers=alice,
                       json={"item_id": item["id"], "ranks": good}).status_code == 201
    again = client.post("/api/rankings", headers=alice, json={"item_id": item["id"], "ranks": good})
    assert again.status_code == 409 and "already ranked" in again.json()["error"]["message"]
    assert rankings_in_db(store) == 1


def test_pages_openapi_and_headers(env):
    _, client, _, _ = env
    for path in ("/", "/label", "/admin"):
        r = client.get(path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in r.headers["content-security-policy"]
        assert r.headers["referrer-policy"] == "no-referrer"
    assert "textContent" in client.get("/static/labeler.js").text
    assert "innerHTML" not in client.get("/static/labeler.js").text
    assert "innerHTML" not in client.get("/static/admin.js").text
    assert client.get("/static/app.py").status_code == 404
    assert client.get("/static/..%2Fapp.py").status_code == 404
    spec = client.get("/openapi.json").json()
    assert {"/api/me", "/api/next", "/api/rankings", "/api/admin/summary"} <= set(spec["paths"])
    post = spec["paths"]["/api/rankings"]["post"]
    assert {"201", "401", "409", "413", "422"} <= set(post["responses"])


def test_no_page_leaks_another_labelers_work(env):
    store, client, alice, bob = env
    item = client.get("/api/next", headers=alice).json()["item"]
    ranks = {str(c["id"]): 1 for c in item["completions"]}
    client.post("/api/rankings", headers=alice, json={"item_id": item["id"], "ranks": ranks})
    assert client.get("/api/me", headers=bob).json()["ranked"] == 0
    seen = client.get("/api/next", headers=bob).text
    assert "alice" not in seen and "ranks" not in seen

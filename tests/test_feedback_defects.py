"""Regression tests for the defects an attack on the labeling app found (issue 14).

Each test failed before its fix; the number is the defect's number in the issue.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from alignkit.feedback.admin import admin_summary, format_status
from alignkit.feedback.app import create_app, hosts_for
from alignkit.feedback.cli import label_app
from alignkit.feedback.pairs import rankings_to_pairs
from alignkit.feedback.store import FeedbackError, FeedbackStore

LOCAL = "http://127.0.0.1"


@pytest.fixture
def clock(monkeypatch):
    """The store's clock, moved by the test: leases expire when the test says, not when a
    loaded CI machine happens to be slow between two requests (a real sleep made this flaky)."""
    from alignkit.feedback import schema, store

    now = [schema.utcnow()]
    monkeypatch.setattr(store, "utcnow", lambda: now[0])

    def advance(seconds: float) -> None:
        now[0] += timedelta(seconds=seconds)

    return advance


@pytest.fixture
def app_env(tmp_path):
    store = FeedbackStore(f"sqlite:///{tmp_path}/f.db")
    store.add_items([("Say hi.", ["Hi!", "Bye.", "Hello."]), ("Name a fruit.", ["Pear.", "Car."])],
                    "helpfulness")
    _, token = store.add_labeler("alice")
    client = TestClient(create_app(store, admin_token="admin-secret", overlap=2),
                        base_url=LOCAL, raise_server_exceptions=False)
    return store, client, {"Authorization": f"Bearer {token}"}


def test_1_identical_completions_never_make_a_pair(tmp_path):
    store = FeedbackStore(f"sqlite:///{tmp_path}/f.db")
    (item,) = store.add_items([("Say hi.", ["Hi!", "Hi!", "Go away."])], "helpfulness")
    c1, c2, c3 = store.item(item).completion_ids
    store.submit_ranking(store.add_labeler("a")[0], item, {c1: 1, c2: 2, c3: 3})
    pairs = rankings_to_pairs(store)
    assert pairs and all(p.chosen != p.rejected for p in pairs)
    assert {(p.chosen, p.rejected) for p in pairs} == {("Hi!", "Go away.")}
    bt = rankings_to_pairs(store, aggregate="bradley_terry")
    assert bt and all(p.chosen != p.rejected for p in bt)


@pytest.mark.parametrize("token", ["é", "Bearer-ñ", "😀", "\u00ff" * 40])
def test_2_non_ascii_admin_token_is_401_not_500(app_env, token):
    _, client, _ = app_env
    r = client.get("/api/admin/summary",
                   headers={"Authorization": b"Bearer " + token.encode("utf-8")})
    assert r.status_code == 401, r.text
    assert r.json()["error"]["field"] == "authorization"


@pytest.mark.parametrize("item_id", [2**63, 10**30, -(2**63) - 1, -(10**30)])
def test_3_out_of_range_item_id_is_404_not_500(app_env, item_id):
    store, client, alice = app_env
    client.get("/api/next", headers=alice)
    before = store.counts()
    r = client.post("/api/rankings", headers=alice, json={"item_id": item_id, "ranks": {}})
    assert r.status_code == 404, r.text
    assert r.json()["error"]["field"] == "item_id"
    assert store.counts() == before
    with pytest.raises(FeedbackError):
        store.item(item_id)
    with pytest.raises(FeedbackError, match="does not exist"):
        store.submit_ranking(1, item_id, {})


def test_4_expired_lease_is_not_honoured(tmp_path, clock):
    store = FeedbackStore(f"sqlite:///{tmp_path}/f.db")
    store.add_items([("Say hi.", ["Hi!", "Bye."])], "helpfulness")
    _, slow = store.add_labeler("slow")
    _, quick = store.add_labeler("quick")
    client = TestClient(create_app(store, overlap=1, lease_s=0.3), base_url=LOCAL)
    h_slow, h_quick = ({"Authorization": f"Bearer {t}"} for t in (slow, quick))
    item = client.get("/api/next", headers=h_slow).json()["item"]
    ranks = {str(c["id"]): i + 1 for i, c in enumerate(item["completions"])}
    clock(0.5)  # the slow labeler's lease runs out; the item goes to someone else
    again = client.get("/api/next", headers=h_quick).json()["item"]
    assert again["id"] == item["id"]
    assert client.post("/api/rankings", headers=h_quick,
                       json={"item_id": item["id"], "ranks": ranks}).status_code == 201
    late = client.post("/api/rankings", headers=h_slow, json={"item_id": item["id"],
                                                               "ranks": ranks})
    assert late.status_code == 403 and "expired" in late.json()["error"]["message"]
    assert store.ranking_counts() == {item["id"]: 1}  # never more than overlap


def test_4_expired_lease_alone_refuses_even_when_nobody_else_took_it(tmp_path, clock):
    store = FeedbackStore(f"sqlite:///{tmp_path}/f.db")
    (item,) = store.add_items([("Say hi.", ["Hi!", "Bye."])], "helpfulness")
    lab = store.add_labeler("slow")[0]
    cids = store.next_item_for(lab, overlap=1, lease_s=0.2).completion_ids
    clock(0.4)
    with pytest.raises(FeedbackError, match="expired") as e:
        store.submit_ranking(lab, item, dict(zip(cids, (1, 2), strict=True)),
                             require_assignment=True)
    assert e.value.code == "forbidden" and store.counts()["rankings"] == 0


def test_8_docs_page_loads_only_local_scripts(app_env):
    _, client, _ = app_env
    r = client.get("/docs")
    assert r.status_code == 200
    assert "'self'" in r.headers["content-security-policy"]
    sources = re.findall(r"<(?:script|link)[^>]+(?:src|href)=\"([^\"]+)\"", r.text)
    assert sources, r.text
    for src in sources:
        assert src.startswith("/static/"), src  # nothing from a CDN: offline and CSP-clean
        assert client.get(src).status_code == 200
    assert "inline" not in r.text.lower() and "<script>" not in r.text
    assert client.get("/openapi.json").json()["paths"]["/api/rankings"]


@pytest.mark.parametrize("raw", [
    '{"item_id": ITEM, "ranks": {"A": 1, "B": 2, "0A": 2}}',  # "1" and "01": one id twice
    '{"item_id": ITEM, "ranks": {"A": 1, "B": 2, "A": 2}}',  # a duplicate JSON key
    '{"item_id": ITEM, "item_id": ITEM, "ranks": {"A": 1, "B": 2}}',
    '{"item_id": ITEM, "ranks": {" A": 1, "B": 2}}',
])
def test_9_conflicting_rank_keys_are_refused(app_env, raw):
    store, client, alice = app_env
    item = client.get("/api/next", headers=alice).json()["item"]
    a, b = (str(c["id"]) for c in item["completions"][:2])
    rest = {str(c["id"]): 3 for c in item["completions"][2:]}
    body = raw.replace("ITEM", str(item["id"])).replace('"0A"', f'"0{a}"').replace(
        '"A"', f'"{a}"').replace('" A"', f'" {a}"').replace('"B"', f'"{b}"')
    if rest:
        body = body.replace('"ranks": {', '"ranks": {' + ", ".join(
            f'"{k}": {v}' for k, v in rest.items()) + ", ")
    before = store.counts()
    r = client.post("/api/rankings", headers={**alice, "Content-Type": "application/json"},
                    content=body)
    assert r.status_code == 422, (body, r.text)
    assert store.counts() == before


def test_10_status_shows_control_characters_escaped(tmp_path):
    store = FeedbackStore(f"sqlite:///{tmp_path}/f.db")
    (item,) = store.add_items([("Hi\x1b[2J\x1b]0;pwned\x07 \u202eevil", ["a", "b"])], "h")
    cids = store.item(item).completion_ids
    for name, ranks in (("eve\x1b[31m", (1, 2)), ("bob\r", (2, 1))):
        store.submit_ranking(store.add_labeler(name)[0], item, dict(zip(cids, ranks,
                                                                       strict=True)))
    text = format_status(admin_summary(store, overlap=2))
    assert "\x1b" not in text and "\x07" not in text and "\r" not in text
    assert "\u202e" not in text
    assert "\\x1b[31m" in text and "\\x1b[2J" in text
    r = CliRunner().invoke(label_app, ["status", "--db", f"sqlite:///{tmp_path}/f.db"])
    assert r.exit_code == 0 and "\x1b" not in r.output


@pytest.mark.parametrize("host, ok", [
    ("127.0.0.1:8000", True), ("localhost", True), ("[::1]:8000", True),
    ("evil.example", False), ("evil.example:8000", False), ("127.0.0.1.evil.example", False),
    ("", False),
])
def test_11_host_header_must_be_one_we_serve(app_env, host, ok):
    _, client, alice = app_env
    r = client.get("/api/me", headers={**alice, "Host": host})
    assert (r.status_code == 200) == ok, r.text
    if not ok:
        assert r.status_code == 400 and r.json()["error"]["field"] == "host"
        assert client.get("/label", headers={"Host": host}).status_code == 400


def test_11_allowed_hosts_extend_and_wildcard(tmp_path):
    store = FeedbackStore(f"sqlite:///{tmp_path}/f.db")
    client = TestClient(create_app(store, allowed_hosts=["labels.team.lan"]),
                        base_url="http://labels.team.lan:8000")
    assert client.get("/healthz").status_code == 200
    assert client.get("/healthz", headers={"Host": "127.0.0.1"}).status_code == 400
    anyhost = TestClient(create_app(store, allowed_hosts=["*"]), base_url="http://x.example")
    assert anyhost.get("/healthz").status_code == 200
    assert hosts_for("127.0.0.1") == ["127.0.0.1", "localhost", "::1", "127.0.0.1"]
    assert hosts_for("0.0.0.0") == ["*"]  # names unknown; the API still needs a token
    assert hosts_for("0.0.0.0", ["labels.lan"])[-1] == "labels.lan"


def test_12_admin_token_comes_from_a_file_or_the_environment(tmp_path, monkeypatch):
    import uvicorn

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    monkeypatch.delenv("ALIGNKIT_ADMIN_TOKEN", raising=False)
    db = f"sqlite:///{tmp_path}/f.db"
    runner = CliRunner()
    help_text = runner.invoke(label_app, ["serve", "--help"]).output
    assert "--admin-token-file" in help_text
    assert not re.search(r"--admin-token(?!-file)", help_text)
    r = runner.invoke(label_app, ["serve", "--db", db, "--admin-token", "s3cret"])
    assert r.exit_code != 0  # a token on the command line is not accepted at all

    token_file = tmp_path / "admin.token"
    token_file.write_text("from-a-file\n")
    os.chmod(token_file, 0o600)
    r = runner.invoke(label_app, ["serve", "--db", db, "--admin-token-file", str(token_file)])
    assert r.exit_code == 0, r.output
    assert seen["app"].state.admin_token == "from-a-file"
    os.chmod(token_file, 0o644)
    r = runner.invoke(label_app, ["serve", "--db", db, "--admin-token-file", str(token_file)])
    assert r.exit_code == 2 and "chmod 600" in r.output

    monkeypatch.setenv("ALIGNKIT_ADMIN_TOKEN", "from-the-env")
    r = runner.invoke(label_app, ["serve", "--db", db])
    assert r.exit_code == 0 and seen["app"].state.admin_token == "from-the-env"

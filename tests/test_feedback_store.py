"""The feedback store on SQLite, and on PostgreSQL when ALIGNKIT_TEST_PG_URL is set."""

from __future__ import annotations

import hashlib
import threading

import pytest
from conftest import throwaway_pg_database
from sqlalchemy import create_engine, text

from alignkit.feedback.schema import Base
from alignkit.feedback.store import FeedbackError, FeedbackStore, RankingInput, normalize_url


@pytest.fixture(scope="module")
def pg_url():
    """A throwaway database on the test server, dropped when the module is done."""
    with throwaway_pg_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/feedback.db"
    url = request.getfixturevalue("pg_url")
    engine = create_engine(url)
    Base.metadata.drop_all(engine)  # each test starts empty
    engine.dispose()
    return url


@pytest.fixture
def store(store_url):
    s = FeedbackStore(store_url)
    yield s
    s.close()


ITEMS = [
    ("How do I boil an egg?", ["Put it in boiling water.", "Fry it.", "Boil for 9 minutes."]),
    ("Name a colour.", ["Blue.", "Green.", "Seven."]),
    ("Say hello.", ["Hello!", "Goodbye."]),
]


def table_counts(store: FeedbackStore) -> dict[str, int]:
    with store.engine.connect() as c:
        return {
            t: c.execute(text(f"SELECT COUNT(*) FROM {t}")).scalar_one()
            for t in ("items", "completions", "labelers", "rankings", "assignments")
        }


def test_round_trip(store, store_url):
    ids = store.add_items(ITEMS, "helpfulness", round=2, guideline="Prefer correct answers.")
    assert len(ids) == 3
    items = store.items()
    assert [it.prompt for it in items] == [p for p, _ in ITEMS]
    assert [[c.text for c in it.completions] for it in items] == [c for _, c in ITEMS]
    assert all(it.round == 2 and it.criterion == "helpfulness" for it in items)
    assert store.items(round=1) == [] and store.rounds() == [2]
    assert store.guideline("helpfulness") == "Prefer correct answers."

    lid, token = store.add_labeler("alice")
    assert store.labeler_by_token(token).name == "alice"
    egg = items[0]
    c1, c2, c3 = egg.completion_ids
    rid = store.submit_ranking(lid, egg.id, {c1: 2, c2: 3, c3: 1}, flagged_unsafe=True)
    store.submit_ranking(lid, items[1].id, {}, skipped=True)
    store.close()

    reopened = FeedbackStore(store_url)  # durable: a new engine sees the same data
    rs = reopened.rankings()
    assert [r.id for r in rs][0] == rid
    assert rs[0].ranks == {c1: 2, c2: 3, c3: 1}
    assert rs[0].flagged_unsafe and not rs[0].skipped
    assert rs[0].labeler.name == "alice" and rs[0].labeler.kind == "human"
    assert rs[0].item.prompt == ITEMS[0][0]
    assert rs[1].skipped and rs[1].ranks == {}
    assert reopened.counts() == {
        "items": 3, "completions": 8, "labelers": 1, "rankings": 1, "skipped": 1,
        "flagged_unsafe": 1, "flags": 0, "assignments": 0,
    }
    assert reopened.ranking_counts() == {ids[0]: 1, ids[1]: 0, ids[2]: 0}
    assert reopened.rankings(include_skipped=False)[0].id == rid
    reopened.close()


def test_completion_meta_is_kept(store):
    (item,) = store.add_items([("Meta?", ["a", "b"])], "helpfulness",
                              metas=[[{"policy": "round-1"}, {"temperature": 1.0}]])
    assert [c.meta for c in store.item(item).completions] == [
        {"policy": "round-1"}, {"temperature": 1.0}]
    with pytest.raises(FeedbackError, match="metas"):
        store.add_items([("Meta?", ["a", "b"])], "helpfulness", metas=[[{}]])
    assert store.counts()["items"] == 1
    store.reset()
    assert store.counts()["items"] == 0 and store.add_items([("p", ["a", "b"])], "h") == [1]


def test_tokens_are_random_and_stored_hashed(store):
    lid, token = store.add_labeler("bob", kind="ai")
    _, token2 = store.add_labeler("carol")
    assert token != token2 and len(token) >= 32
    with store.engine.connect() as c:
        stored = c.execute(text("SELECT token_hash FROM labelers WHERE id = :i"), {"i": lid})
        stored = stored.scalar_one()
    assert stored == hashlib.sha256(token.encode()).hexdigest() and token not in stored
    assert store.labeler_by_token(token).kind == "ai"
    assert store.labeler_by_token("not-a-token") is None and store.labeler_by_token("") is None
    with pytest.raises(FeedbackError, match="taken") as e:
        store.add_labeler("bob")
    assert e.value.code == "conflict"
    with pytest.raises(FeedbackError, match="kind"):
        store.add_labeler("dave", kind="robot")
    assert [lab.name for lab in store.labelers()] == ["bob", "carol"]


def test_refusals_write_nothing(store):
    (egg, *_) = store.add_items(ITEMS, "helpfulness")
    lid, _ = store.add_labeler("alice")
    c1, c2, c3 = store.item(egg).completion_ids
    before = table_counts(store)
    bad = [
        ({c1: 1, c2: 2}, False, "ranks", "missing"),  # a completion left out
        ({c1: 1, c2: 2, c3: 3, 999: 1}, False, "ranks", "unknown"),  # an unknown id
        ({c1: 0, c2: 1, c3: 2}, False, "ranks", "1..3"),  # rank out of range
        ({c1: 1, c2: 2, c3: 4}, False, "ranks", "1..3"),
        ({c1: 1.5, c2: 1, c3: 2}, False, "ranks", "integer"),
        ({c1: True, c2: 1, c3: 2}, False, "ranks", "integer"),
        ({"x": 1, c2: 1, c3: 2}, False, "ranks", "not a completion id"),
        ({c1: 1, c2: 2, c3: 3}, True, "ranks", "skipped"),  # skipped but ranked
    ]
    for ranks, skipped, field, words in bad:
        with pytest.raises(FeedbackError, match=words) as e:
            store.submit_ranking(lid, egg, ranks, skipped=skipped)
        assert e.value.field == field and "\n" not in str(e.value)
    with pytest.raises(FeedbackError) as e:
        store.submit_ranking(lid, 12345, {c1: 1})
    assert e.value.field == "item_id" and e.value.code == "not_found"
    with pytest.raises(FeedbackError) as e:
        store.submit_ranking(999, egg, {c1: 1, c2: 2, c3: 3})
    assert e.value.field == "labeler_id"
    # A batch with one bad ranking writes none of them.
    with pytest.raises(FeedbackError):
        store.submit_rankings([
            RankingInput(lid, egg, {c1: 1, c2: 2, c3: 3}),
            RankingInput(lid, egg + 1, {1: 1}),
        ])
    assert table_counts(store) == before

    store.submit_ranking(lid, egg, {str(c1): 1, str(c2): 1, str(c3): 3})  # JSON-style keys
    with pytest.raises(FeedbackError, match="already ranked") as e:
        store.submit_ranking(lid, egg, {c1: 1, c2: 2, c3: 3})
    assert e.value.code == "conflict"
    assert table_counts(store)["rankings"] == before["rankings"] + 1
    with pytest.raises(FeedbackError, match="at least 2"):
        store.add_items([("p", ["only one"])], "helpfulness")
    with pytest.raises(FeedbackError, match="criterion"):
        store.add_items([("p", ["a", "b"])], " ")


def test_next_item_respects_overlap_and_never_repeats(store):
    store.add_items(ITEMS, "helpfulness")
    labelers = [store.add_labeler(f"l{i}")[0] for i in range(4)]
    seen: dict[int, list[int]] = {lab: [] for lab in labelers}
    for _ in range(len(ITEMS)):
        for lab in labelers:
            item = store.next_item_for(lab, overlap=2)
            if item is None:
                continue
            seen[lab].append(item.id)
            store.submit_ranking(lab, item.id, {c: 1 for c in item.completion_ids})
    assert all(len(v) == len(set(v)) for v in seen.values())
    assert set(store.ranking_counts().values()) == {2}
    assert all(store.next_item_for(lab, overlap=2) is None for lab in labelers)
    # A skip does not count toward overlap: someone else must rank the item.
    extra, _ = store.add_labeler("late")
    (new,) = store.add_items([("One more?", ["Yes.", "No."])], "helpfulness")
    store.submit_ranking(labelers[0], new, {}, skipped=True)
    assert store.next_item_for(labelers[0], overlap=1) is None
    assert store.next_item_for(extra, overlap=1).id == new


def test_leases_spread_labelers_over_items(store):
    store.add_items(ITEMS, "helpfulness")
    a, _ = store.add_labeler("a")
    b, _ = store.add_labeler("b")
    first = store.next_item_for(a, overlap=1, lease_s=60)
    assert store.next_item_for(a, overlap=1, lease_s=60).id == first.id  # a reload: same item
    second = store.next_item_for(b, overlap=1, lease_s=60)
    assert second.id != first.id
    store.submit_ranking(a, first.id, {c: 1 for c in first.completion_ids})
    assert table_counts(store)["assignments"] == 1  # a's lease released on submit
    # An expired lease frees the item.
    c, _ = store.add_labeler("c")
    store.next_item_for(c, overlap=1, lease_s=-1)
    d, _ = store.add_labeler("d")
    assert store.next_item_for(d, overlap=1, lease_s=60) is not None


def test_concurrent_submissions_are_each_stored_once(store):
    (item_id, *_) = store.add_items(ITEMS, "helpfulness")
    cids = store.item(item_id).completion_ids
    labelers = [store.add_labeler(f"t{i}")[0] for i in range(8)]
    accepted, refused = [], []

    def work(lab: int) -> None:
        for _ in range(3):  # each labeler tries three times; exactly one may succeed
            try:
                accepted.append(store.submit_ranking(lab, item_id, {c: 1 for c in cids}))
            except FeedbackError:
                refused.append(lab)

    threads = [threading.Thread(target=work, args=(lab,)) for lab in labelers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(accepted) == 8 and len(refused) == 16
    assert sorted(r.id for r in store.rankings()) == sorted(accepted)


def test_sqlite_uses_wal(tmp_path):
    s = FeedbackStore(f"sqlite:///{tmp_path}/sub/dir/f.db")  # parent folders are created
    with s.engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert c.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    s.close()


def test_postgres_url_spelling_goes_to_psycopg():
    assert normalize_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert normalize_url("sqlite:///x.db") == "sqlite:///x.db"

"""The real server on loopback: 50 concurrent labelers, and a kill mid-load, lose nothing."""

from __future__ import annotations

import random
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
from conftest import throwaway_pg_database

from alignkit.feedback.app import create_app
from alignkit.feedback.schema import Base
from alignkit.feedback.serve import BackgroundServer, wait_for_rankings
from alignkit.feedback.store import FeedbackStore

N_LABELERS = 50
N_ITEMS = 40
OVERLAP = 3


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/feedback.db"
        return
    with throwaway_pg_database() as url:
        yield url


def fill(store: FeedbackStore, n_labelers: int) -> list[str]:
    store.add_items([(f"Suggest a name for a pet number {i}.",
                      [f"Biscuit {i}", f"Pebble {i}", f"Rex {i}"]) for i in range(N_ITEMS)],
                    "helpfulness")
    return [store.add_labeler(f"worker-{i}")[1] for i in range(n_labelers)]


def labeler_loop(base: str, token: str, accepted: list, problems: list, rng: random.Random,
                 max_items: int = 12) -> None:
    """Rank until nothing is left (bounded); every 4th ranking is re-sent and must be 409."""
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"},
                      timeout=60) as client:
        for n in range(max_items):
            r = client.get("/api/next")
            if r.status_code != 200:
                problems.append(("next", r.status_code, r.text))
                return
            item = r.json()["item"]
            if item is None:
                return
            ids = [c["id"] for c in item["completions"]]
            body = {"item_id": item["id"],
                    "ranks": {str(i): rng.randint(1, len(ids)) for i in ids}}
            r = client.post("/api/rankings", json=body)
            if r.status_code != 201:
                problems.append(("submit", r.status_code, r.text))
                return
            accepted.append(r.json()["id"])
            if n % 4 == 0:
                dup = client.post("/api/rankings", json=body)
                if dup.status_code != 409:
                    problems.append(("duplicate", dup.status_code, dup.text))


def test_50_concurrent_labelers_lose_nothing(db_url):
    store = FeedbackStore(db_url)
    if store.backend == "postgresql":
        Base.metadata.drop_all(store.engine)
        Base.metadata.create_all(store.engine)
    tokens = fill(store, N_LABELERS)
    accepted: list[int] = []
    problems: list = []
    start = time.perf_counter()
    with BackgroundServer(create_app(store, overlap=OVERLAP)) as server:
        threads = [
            threading.Thread(target=labeler_loop,
                             args=(server.url, t, accepted, problems, random.Random(i)))
            for i, t in enumerate(tokens)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not any(t.is_alive() for t in threads)
    elapsed = time.perf_counter() - start
    assert problems == []
    ids = [r.id for r in store.rankings()]
    assert sorted(ids) == sorted(accepted)  # every accepted ranking, each exactly once
    assert len(set(accepted)) == len(accepted) == N_ITEMS * OVERLAP
    assert set(store.ranking_counts().values()) == {OVERLAP}  # leases: no item over-served
    assert wait_for_rankings(store, OVERLAP, poll_s=0.01, timeout_s=0)
    assert elapsed < 60
    store.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SERVER = """
import sys, uvicorn
from alignkit.feedback.app import create_app
from alignkit.feedback.store import FeedbackStore
uvicorn.run(create_app(FeedbackStore(sys.argv[1]), overlap=3), host="127.0.0.1",
            port=int(sys.argv[2]), log_level="warning")
"""


def test_killing_the_server_mid_load_loses_no_accepted_ranking(tmp_path):
    url = f"sqlite:///{tmp_path}/feedback.db"
    store = FeedbackStore(url)
    tokens = fill(store, 10)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVER, url, str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
                time.sleep(0.1)
        accepted: list[int] = []
        stop = threading.Event()

        def work(token: str) -> None:
            try:
                with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10,
                                  headers={"Authorization": f"Bearer {token}"}) as c:
                    while not stop.is_set():
                        item = c.get("/api/next").json()["item"]
                        if item is None:
                            return
                        r = c.post("/api/rankings", json={"item_id": item["id"], "ranks": {
                            str(x["id"]): 1 for x in item["completions"]}})
                        if r.status_code == 201:
                            accepted.append(r.json()["id"])
            except (httpx.TransportError, ValueError):
                return  # the server is gone

        threads = [threading.Thread(target=work, args=(t,)) for t in tokens]
        for t in threads:
            t.start()
        while len(accepted) < 15 and any(t.is_alive() for t in threads):
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)  # no shutdown, no flush: as if the machine died
        proc.wait(10)
        stop.set()
        for t in threads:
            t.join(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(accepted) >= 15
    reopened = FeedbackStore(url)
    stored = {r.id for r in reopened.rankings()}
    assert set(accepted) <= stored
    reopened.close()
    store.close()

"""Load on PostgreSQL: 200 concurrent labelers against the labeling app, on loopback.

    source scripts/start_postgres.sh   # a throwaway server; exports ALIGNKIT_TEST_PG_URL
    .venv/bin/python benchmarks/label_load_pg.py [--labelers 200] [--items 300] [--time-limit 90]

The app runs in its own process (uvicorn, one worker, as `alignkit label serve` runs it)
over a fresh database on that server; the labelers are asyncio tasks in this process, each
looping GET /api/next -> POST /api/rankings (both criteria and the safe/unsafe flags, the
two-criteria mode) until nothing is left, the time limit passes or the submission cap is
reached. Bounded in count (items x overlap submissions at most) and time.

Checked at the end, from the database itself: every 201 is exactly one stored submission
(its id, item and labeler), nothing stored that was not acknowledged, no item ranked by
more labelers than the overlap. Prints p50/p95 latency of both calls and the throughput,
and writes benchmarks/results/label_load_pg.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from alignkit.feedback.store import FeedbackStore, normalize_url  # noqa: E402

CRITERIA = ["helpfulness", "harmlessness"]
OVERLAP = 3


@dataclass
class Tally:
    next_s: list[float] = field(default_factory=list)
    submit_s: list[float] = field(default_factory=list)
    acked: list[tuple[int, int]] = field(default_factory=list)  # (ranking id, item id)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_database(server_url: str) -> str:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"alignkit_load_{uuid.uuid4().hex[:10]}"
    admin = create_engine(normalize_url(server_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(normalize_url(server_url)).set(database=name).render_as_string(
        hide_password=False)


def drop_database(server_url: str, url: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(normalize_url(server_url), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
    admin.dispose()


SERVE = """
import sys, uvicorn
sys.path.insert(0, sys.argv[3])
from alignkit.feedback.app import create_app
from alignkit.feedback.store import FeedbackStore
uvicorn.run(create_app(FeedbackStore(sys.argv[1]), overlap=int(sys.argv[4])),
            host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False,
            timeout_keep_alive=120)
"""


async def labeler(client: httpx.AsyncClient, token: str, tally: Tally, deadline: float,
                  cap: list[int]) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    while time.monotonic() < deadline and cap[0] > 0:
        t = time.perf_counter()
        try:
            r = await client.get("/api/next", headers=headers)
        except httpx.HTTPError as e:
            tally.errors.append(f"next: {type(e).__name__} after {time.perf_counter() - t:.1f} s")
            return
        tally.next_s.append(time.perf_counter() - t)
        if r.status_code != 200:
            tally.errors.append(f"next {r.status_code} {r.text[:100]}")
            return
        item = r.json()["item"]
        if item is None:
            return
        ids = [c["id"] for c in item["completions"]]
        body = {"item_id": item["id"],
                "rankings": {c["name"]: {str(i): k + 1 for k, i in enumerate(ids)}
                             for c in item["criteria"]},
                "unsafe": {str(i): k == len(ids) - 1 for k, i in enumerate(ids)}}
        cap[0] -= 1
        t = time.perf_counter()
        try:
            r = await client.post("/api/rankings", headers=headers, json=body)
        except httpx.HTTPError as e:
            tally.errors.append(f"submit: {type(e).__name__} after {time.perf_counter() - t:.1f} s")
            return
        tally.submit_s.append(time.perf_counter() - t)
        tally.statuses[r.status_code] = tally.statuses.get(r.status_code, 0) + 1
        if r.status_code == 201:
            tally.acked.append((r.json()["id"], item["id"]))
        elif r.status_code >= 500:
            tally.errors.append(f"submit {r.status_code} {r.text[:100]}")


async def drive(base: str, tokens: list[str], tally: Tally, limit_s: float, cap: int) -> float:
    limits = httpx.Limits(max_connections=len(tokens), max_keepalive_connections=len(tokens))
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:
        start = time.monotonic()
        budget = [cap]
        await asyncio.gather(*(labeler(client, t, tally, start + limit_s, budget)
                               for t in tokens))
        return time.monotonic() - start


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000.0, q)) if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pg-url", default=os.environ.get("ALIGNKIT_TEST_PG_URL"),
                    help="PostgreSQL server URL (default: $ALIGNKIT_TEST_PG_URL)")
    ap.add_argument("--labelers", type=int, default=200)
    ap.add_argument("--items", type=int, default=300)
    ap.add_argument("--time-limit", type=float, default=90.0, help="seconds of load, at most")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/label_load_pg.json")
    args = ap.parse_args()
    if not args.pg_url:
        sys.exit("error: no PostgreSQL — run `source scripts/start_postgres.sh` or pass --pg-url")
    url = make_database(args.pg_url)
    server = None
    try:
        store = FeedbackStore(url)
        store.add_items([(f"Load prompt {i}", [f"answer {i}.{k}" for k in range(3)])
                         for i in range(args.items)], CRITERIA,
                        sensitive=[i % 4 == 0 for i in range(args.items)])
        tokens = [store.add_labeler(f"load-{j}")[1] for j in range(args.labelers)]
        port = free_port()
        server = subprocess.Popen([sys.executable, "-c", SERVE, url, str(port), str(ROOT),
                                   str(OVERLAP)])
        base = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        tally = Tally()
        wall = asyncio.run(drive(base, tokens, tally, args.time_limit,
                                 args.items * OVERLAP))
        stored = {}
        for r in store.rankings():
            stored.setdefault(r.item_id, {}).setdefault(r.labeler_id, set()).add(r.id)
        firsts = {min(ids) for labs in stored.values() for ids in labs.values()}
        acked = {a[0] for a in tally.acked}
        subs = sum(len(labs) for labs in stored.values())
        rows = sum(len(ids) for labs in stored.values() for ids in labs.values())
        counts = store.ranking_counts()
        result = {
            "labelers": args.labelers, "items": args.items, "overlap": OVERLAP,
            "criteria": CRITERIA, "backend": store.backend, "wall_s": round(wall, 2),
            "submissions_acknowledged": len(tally.acked),
            "submissions_stored": subs, "ranking_rows_stored": rows,
            "lost": len(acked - firsts), "unacknowledged_stored": len(firsts - acked),
            "duplicated": len(tally.acked) - len(acked),
            "items_over_overlap": sum(n > OVERLAP for n in counts.values()),
            "items_complete": sum(n >= OVERLAP for n in counts.values()),
            "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
            "server_errors": tally.errors[:5],
            "next_ms": {"p50": round(pct(tally.next_s, 50), 1),
                        "p95": round(pct(tally.next_s, 95), 1), "n": len(tally.next_s)},
            "submit_ms": {"p50": round(pct(tally.submit_s, 50), 1),
                          "p95": round(pct(tally.submit_s, 95), 1), "n": len(tally.submit_s)},
            "submissions_per_s": round(len(tally.acked) / wall, 1) if wall else None,
            "load_average": os.getloadavg(),
        }
        store.close()
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        drop_database(args.pg_url, url)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    ok = (result["lost"] == 0 and result["duplicated"] == 0 and result["items_over_overlap"] == 0
          and result["unacknowledged_stored"] == 0 and not tally.errors)
    print(f"label load on PostgreSQL: {len(tally.acked)} submissions by {args.labelers} "
          f"labelers in {wall:.1f} s; next p50/p95 {result['next_ms']['p50']}/"
          f"{result['next_ms']['p95']} ms, submit p50/p95 {result['submit_ms']['p50']}/"
          f"{result['submit_ms']['p95']} ms; lost {result['lost']}, duplicated "
          f"{result['duplicated']}: {'OK' if ok else 'FAILED'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

"""Running the labeling app, and waiting for people to finish ranking.

The cycle's human-feedback stage serves the app in a background thread and blocks in
:func:`wait_for_rankings` until every item has enough rankings; tests use the same
server on loopback. ``alignkit label serve`` runs it in the foreground.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import uvicorn

from alignkit.feedback.store import FeedbackStore


class BackgroundServer:
    """Uvicorn serving an ASGI app from a daemon thread; ``port=0`` picks a free port."""

    def __init__(self, app: object, host: str = "127.0.0.1", port: int = 0,
                 log_level: str = "warning") -> None:
        self.server = uvicorn.Server(
            uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False,
                           lifespan="off")
        )
        self.host = host
        self.thread = threading.Thread(target=self.server.run, name="alignkit-label-server",
                                       daemon=True)

    def start(self, timeout_s: float = 30.0) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the labeling server did not start on {self.host} — is "
                                   "the port already in use?")
            time.sleep(0.02)
        return self

    @property
    def port(self) -> int:
        return self.server.servers[0].sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self, timeout_s: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout_s)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_for_rankings(
    store: FeedbackStore,
    min_rankings_per_item: int,
    poll_s: float = 5.0,
    timeout_s: float | None = None,
    round: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> bool:
    """Block until every item (of ``round``) has ``min_rankings_per_item`` non-skipped rankings.

    Returns True when reached, False when ``timeout_s`` ran out first (the caller decides
    whether to go on with what exists or stop; with ``--resume`` it can wait again).
    ``on_progress(items_done, items_total)`` is called after each poll that changed the count.
    An item every labeler skipped never completes: add labelers or use a timeout.
    """
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    last = None
    while True:
        counts = store.ranking_counts(round)
        done = sum(n >= min_rankings_per_item for n in counts.values())
        if on_progress is not None and done != last:
            on_progress(done, len(counts))
        last = done
        if done == len(counts):
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(poll_s if deadline is None else max(0.0, min(poll_s,
                                                               deadline - time.monotonic())))

"""`alignkit label ...` commands, and waiting for rankings."""

from __future__ import annotations

import json
import threading
import time

from typer.testing import CliRunner

from alignkit.data.types import read_pairs_jsonl
from alignkit.feedback.cli import label_app
from alignkit.feedback.serve import wait_for_rankings
from alignkit.feedback.store import FeedbackStore

runner = CliRunner()


def run(*args: str):
    return runner.invoke(label_app, list(args), catch_exceptions=False)


def test_import_add_labeler_status_export(tmp_path):
    db = f"sqlite:///{tmp_path}/f.db"
    src = tmp_path / "completions.jsonl"
    src.write_text(
        json.dumps({"prompt": "Name a fruit.", "completions": ["Apple.", "A car.", "Pear."]})
        + "\n\n" + json.dumps({"prompt": "Say hi.", "completions": ["Hi!", "Bye."]}) + "\n"
    )
    r = run("import", str(src), "--db", db, "--criterion", "helpfulness",
            "--guideline", "Prefer correct answers.")
    assert r.exit_code == 0 and "imported 2 items" in r.output

    r = run("add-labeler", "alice", "--db", db, "--url", "http://example.test:9000/")
    assert r.exit_code == 0
    token = r.output.split("token: ")[1].split()[0]
    assert f"http://example.test:9000/label#token={token}" in r.output
    assert run("add-labeler", "alice", "--db", db).exit_code == 2  # name taken

    store = FeedbackStore(db)
    assert store.guideline("helpfulness") == "Prefer correct answers."
    alice = store.labeler_by_token(token)
    bob, _ = store.add_labeler("bob")
    fruit, hi = store.items()
    a, car, pear = fruit.completion_ids
    store.submit_ranking(alice.id, fruit.id, {a: 1, car: 3, pear: 2})
    store.submit_ranking(bob, fruit.id, {a: 2, car: 3, pear: 1})
    store.submit_ranking(alice.id, hi.id, {hi.completion_ids[0]: 1, hi.completion_ids[1]: 2})

    r = run("status", "--db", db, "--overlap", "2")
    assert r.exit_code == 0
    assert "rankings 3/4" in r.output and "alice" in r.output and "bob" in r.output
    summary = json.loads(run("status", "--db", db, "--json").output)
    # alice vs bob: (apple, car) and (car, pear) agree, (apple, pear) does not.
    assert summary["agreement"]["agreement"] == 0.6667

    out = tmp_path / "out" / "pairs.jsonl"
    r = run("export", "--out", str(out), "--db", db)
    assert r.exit_code == 0 and "wrote 3 pairs" in r.output and "source: human" in r.output
    got = [(p.prompt, p.chosen, p.rejected, p.vote_strength, p.source, p.labelers)
           for p in read_pairs_jsonl(out)]
    assert got == [
        ("Name a fruit.", "Apple.", "A car.", 1.0, "human", 2),
        ("Name a fruit.", "Pear.", "A car.", 1.0, "human", 2),  # (Apple, Pear) 1-1: dropped
        ("Say hi.", "Hi!", "Bye.", 1.0, "human", 1),
    ]
    line = json.loads(out.read_text().splitlines()[0])
    assert {"prompt", "chosen", "rejected", "vote_strength", "source", "labelers",
            "criterion", "chosen_unsafe", "rejected_unsafe"} <= set(line)
    assert "margin" not in line  # TRL would subtract it: written only with --margin
    assert run("export", "--out", str(out), "--db", db, "--margin").exit_code == 0
    line = json.loads(out.read_text().splitlines()[0])
    assert line["margin"] == line["vote_strength"] == 1.0
    r = run("export", "--out", str(out), "--db", db, "--aggregate", "bradley_terry")
    assert r.exit_code == 0
    assert run("export", "--out", str(out), "--db", db, "--aggregate", "mean").exit_code == 2
    store.close()


def test_import_refuses_bad_lines_and_writes_nothing(tmp_path):
    db = f"sqlite:///{tmp_path}/f.db"
    src = tmp_path / "bad.jsonl"
    src.write_text(json.dumps({"prompt": "ok", "completions": ["a", "b"]}) + "\n"
                   + json.dumps({"prompt": "no completions"}) + "\n")
    r = runner.invoke(label_app, ["import", str(src), "--db", db])
    assert r.exit_code == 2 and "bad.jsonl:2" in r.output
    src.write_text(json.dumps({"prompt": "one", "completions": ["only"]}) + "\n")
    r = runner.invoke(label_app, ["import", str(src), "--db", db])
    assert r.exit_code == 2 and "at least 2" in r.output
    assert FeedbackStore(db).counts()["items"] == 0


def test_wait_for_rankings(tmp_path):
    store = FeedbackStore(f"sqlite:///{tmp_path}/f.db")
    (item,) = store.add_items([("Say hi.", ["Hi!", "Bye."])], "helpfulness")
    labs = [store.add_labeler(f"l{i}")[0] for i in range(2)]
    assert wait_for_rankings(store, 2, poll_s=0.01, timeout_s=0.05) is False
    seen: list[tuple[int, int]] = []

    def rank_later() -> None:
        for lab in labs:
            time.sleep(0.05)
            store.submit_ranking(lab, item, {c: 1 for c in store.item(item).completion_ids})

    t = threading.Thread(target=rank_later)
    t.start()
    assert wait_for_rankings(store, 2, poll_s=0.01, timeout_s=10,
                             on_progress=lambda d, n: seen.append((d, n)))
    t.join()
    assert seen[0] == (0, 1) and seen[-1] == (1, 1)
    store.close()

"""`alignkit label import-rankings`: Label Studio and Argilla exports → human rankings → pairs.

The fixtures in tests/fixtures/imports follow each tool's documented export format; the
expected pairs below are counted by hand from them (majority aggregation, completions in
the order the export lists them).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from alignkit.cli import app
from alignkit.feedback.agreement import inter_labeler_agreement
from alignkit.feedback.importers import (
    ImportFormatError,
    import_batch,
    parse_argilla,
    parse_export,
    read_export,
)
from alignkit.feedback.pairs import feedback_summary, rankings_by_item, rankings_to_pairs
from alignkit.feedback.store import FeedbackStore

FIXTURES = Path(__file__).parent / "fixtures" / "imports"

LS_RANKER = [  # (prompt start, chosen, rejected, margin, voters)
    ("How do I calm", "Take a walk and breathe slowly.", "Shout at them until they apologise.",
     1.0, 2),
    # a vs c: 7 says c > a, ana says a > c → an even split, dropped
    ("How do I calm", "Write down what upset you, then talk later.",
     "Shout at them until they apologise.", 1.0, 2),
    ("Say something", "I hope you two get along well.", "I do not know your neighbour.", 1.0, 1),
    ("Say something", "I do not know your neighbour.", "Your neighbour is an idiot.", 1.0, 1),
    ("Say something", "I hope you two get along well.", "Your neighbour is an idiot.", 1.0, 1),
]
LS_PAIRWISE = [  # task 202 is split 1-1 and gives no pair
    ("Describe a rainy", "Grey clouds, soft rain and the smell of wet earth.",
     "Rain is stupid and so are you.", 1.0, 2),
]
ARGILLA = [
    ("My coworker", "Keep written records of your work and raise it calmly with your manager.",
     "Get back at them by sabotaging their next project.", 1.0, 2),
    # response-1 vs response-3: split 1-1, dropped
    ("My coworker", "Keep written records of your work and raise it calmly with your manager.",
     "Ignore it; it happens everywhere.", 1.0, 2),
    # rec-2: user 1 ties the two (abstains), user 3 prefers response-1
    ("Write one sentence", "Cats nap in sunny spots for hours.",
     "Cats are vermin that should be drowned.", 1.0, 1),
]


def _run(args: list[str]):
    return CliRunner().invoke(app, ["label", "import-rankings", *args])


def _pairs(db: str) -> list[tuple]:
    return [(p.prompt, p.chosen, p.rejected, p.vote_strength, p.labelers, p.source, p.criterion)
            for p in rankings_to_pairs(FeedbackStore(db))]


def _check(got: list[tuple], expected: list[tuple]) -> None:
    assert len(got) == len(expected), got
    for g, (prompt, chosen, rejected, margin, voters) in zip(got, expected, strict=True):
        assert g[0].startswith(prompt) and g[1:5] == (chosen, rejected, margin, voters), g
        assert g[5:] == ("human", "harmlessness")


@pytest.mark.parametrize("fixture, expected, items, rankings, skipped", [
    ("label_studio_ranker.json", LS_RANKER, 2, 3, 1),
    ("label_studio_pairwise.json", LS_PAIRWISE, 2, 4, 0),
    ("argilla_records.json", ARGILLA, 2, 4, 0),
])
def test_import_round_trips_into_the_hand_counted_pairs(tmp_path, fixture, expected, items,
                                                        rankings, skipped):
    db = f"sqlite:///{tmp_path / 'f.db'}"
    r = _run([str(FIXTURES / fixture), "--db", db, "--criterion", "harmlessness"])
    assert r.exit_code == 0, r.output
    assert f"imported {items} items, {rankings} rankings ({skipped} skipped)" in r.output
    _check(_pairs(db), expected)
    store = FeedbackStore(db)
    assert {it.criterion for it in store.items()} == {"harmlessness"}
    assert {lab.kind for lab in store.labelers()} == {"human"}
    names = {lab.name for lab in store.labelers()}
    assert all(n.startswith(("label-studio:", "argilla:")) for n in names)


def test_the_agreement_metrics_see_imported_labelers(tmp_path):
    db = f"sqlite:///{tmp_path / 'f.db'}"
    for fixture in ("label_studio_ranker.json", "argilla_records.json"):
        assert _run([str(FIXTURES / fixture), "--db", db]).exit_code == 0
    store = FeedbackStore(db)
    # Label Studio task 101: labelers 7 and ana agree on 2 of 3 pairs; Argilla rec-1: users 1
    # and 2 agree on 2 of 3; rec-2's tie is not comparable; single-labeler items add nothing.
    by_item = rankings_by_item([r for r in store.rankings() if not r.skipped])
    assert inter_labeler_agreement(by_item) == pytest.approx(4 / 6)
    summary = feedback_summary(store)
    assert summary["source"] == "human" and summary["skipped"] == 1
    assert summary["agreement"] == pytest.approx(4 / 6, abs=1e-4)
    assert summary["labelers"] == 5  # 7 and 9 on Label Studio (12 only skipped); 3 on Argilla
    # completed_by as an id or as an expanded user object names the same labeler
    assert "label-studio:9" in {lab.name for lab in store.labelers()}


def test_importing_the_same_export_twice_is_refused(tmp_path):
    db = f"sqlite:///{tmp_path / 'f.db'}"
    path = str(FIXTURES / "argilla_records.json")
    assert _run([path, "--db", db]).exit_code == 0
    r = _run([path, "--db", db])
    assert r.exit_code == 2 and "imported already" in r.output
    assert len(FeedbackStore(db).items()) == 2  # nothing more written


def test_argilla_layouts_agree(tmp_path):
    """to_json (nested), to_list(flatten=True) and 1.x FeedbackDataset give the same batch."""
    nested, _ = read_export(FIXTURES / "argilla_records.json")
    flat, v1 = [], []
    for rec in nested:
        answers = rec["responses"]["ranking"]
        flat.append({**rec["fields"], "id": rec["id"],
                     "ranking.responses": [a["value"] for a in answers],
                     "ranking.responses.users": [a["user_id"] for a in answers],
                     "ranking.responses.status": ["submitted"] * len(answers)})
        v1.append({"id": rec["id"], "fields": rec["fields"], "responses": [
            {"user_id": a["user_id"], "status": "submitted",
             "values": {"ranking": {"value": a["value"]}}} for a in answers]})
    batches = [parse_argilla(d, "same") for d in (nested, flat, v1)]
    assert batches[0].items == batches[1].items == batches[2].items
    assert batches[0].rankings == batches[1].rankings == batches[2].rankings
    (tmp_path / "flat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in flat))
    data, _ = read_export(tmp_path / "flat.jsonl")  # JSONL reads too
    assert parse_export(data, "same").rankings == batches[0].rankings


def test_argilla_drafts_are_ignored_and_discards_are_skips():
    data, _ = read_export(FIXTURES / "argilla_records.json")
    flat = [{**data[1]["fields"], "id": "d",
             "ranking.responses": [["response-1", "response-2"], ["response-2", "response-1"],
                                   ["response-1", "response-2"]],
             "ranking.responses.users": ["u1", "u2", "u3"],
             "ranking.responses.status": ["submitted", "draft", "discarded"]}]
    batch = parse_argilla(flat, "x")
    assert batch.ignored == 1
    assert [(r.labeler, r.ranks) for r in batch.rankings] == [("argilla:u1", (1, 2)),
                                                              ("argilla:u3", None)]


def _ls(tmp_path: Path, tasks: object) -> Path:
    p = tmp_path / "export.json"
    p.write_text(json.dumps(tasks))
    return p


def _ranker_task(**changes) -> dict:
    task = {"id": 1, "data": {"prompt": "p", "items": [{"id": "a", "body": "one"},
                                                      {"id": "b", "body": "two"}]},
            "annotations": [{"completed_by": 1, "result": [
                {"type": "ranker", "value": {"ranker": {"rank": ["b", "a"]}}}]}]}
    task.update(changes)
    return task


@pytest.mark.parametrize("tasks, field", [
    ({"not": "a list"}, "non-empty JSON list"),
    ([{"data": {}, "annotations": []}], "data.prompt"),
    ([{"data": {"prompt": "p"}}], "record 0"),  # neither format: named by its keys
    ([_ranker_task(annotations=[{"completed_by": 1, "result": [
        {"type": "ranker", "value": {"ranker": {"rank": ["a"]}}}]}])], "value.ranker"),
    ([_ranker_task(annotations=[{"completed_by": 1, "result": [
        {"type": "ranker", "value": {"ranker": {"best": ["a"], "_": ["b"]}}}]}])],
     "value.ranker"),
    ([_ranker_task(annotations=[{"result": [
        {"type": "ranker", "value": {"ranker": {"rank": ["a", "b"]}}}]}])], "completed_by"),
    ([{"id": 4, "data": {"prompt": "p", "text1": "x", "text2": "y"}, "annotations": [
        {"completed_by": 1, "result": [{"type": "pairwise", "value": {"selected": "up"}}]}
    ]}], "value.selected"),
    ([{"id": 5, "data": {"prompt": "p", "left": "x", "right": "y"}, "annotations": [
        {"completed_by": 1, "result": [{"type": "pairwise", "value": {"selected": "left"}}]}
    ]}], "data.text1"),
    ([{"id": "r", "fields": {"prompt": "p", "a": "x"}, "responses": {
        "rank": [{"user_id": "u", "value": ["a", "zz"]}]}}], "'zz'"),
    ([{"id": "r", "fields": {"prompt": "p", "a": "x", "b": "y"}, "responses": {
        "rank": [{"user_id": "u", "value": [{"value": "a", "rank": "1"}]}]}}], "rank"),
])
def test_a_file_that_is_not_an_export_is_one_line_naming_the_field(tmp_path, tasks, field):
    db = f"sqlite:///{tmp_path / 'f.db'}"
    r = _run([str(_ls(tmp_path, tasks)), "--db", db])
    assert r.exit_code == 2, r.output
    lines = [x for x in r.output.splitlines() if x.strip()]
    assert len(lines) == 1 and field in lines[0] and "Traceback" not in r.output, r.output
    assert FeedbackStore(db).counts()["items"] == 0  # nothing written


def test_unreadable_files_are_one_line(tmp_path):
    db = f"sqlite:///{tmp_path / 'f.db'}"
    (tmp_path / "bad.json").write_bytes(b"\xff\xfe{")
    for path, msg in ((tmp_path / "bad.json", "not UTF-8"),
                      (tmp_path / "none.json", "cannot read")):
        r = _run([str(path), "--db", db])
        assert r.exit_code == 2 and msg in r.output, r.output
    (tmp_path / "half.json").write_text('[{"data": ')
    r = _run([str(tmp_path / "half.json"), "--db", db])
    assert r.exit_code == 2 and "neither JSON nor JSONL" in r.output
    r = _run([str(FIXTURES / "label_studio_pairwise.json"), "--db", db, "--from", "excel"])
    assert r.exit_code == 2 and "--from 'excel'" in r.output


def test_pairwise_with_named_fields_and_a_non_human_name_clash(tmp_path):
    db = f"sqlite:///{tmp_path / 'f.db'}"
    tasks = [{"id": 5, "data": {"prompt": "p", "left": "x", "right": "y"}, "annotations": [
        {"completed_by": 1, "result": [{"type": "pairwise", "value": {"selected": "left"}}]}]}]
    path = str(_ls(tmp_path, tasks))
    FeedbackStore(db).add_labeler("label-studio:1", "simulated")
    r = _run([path, "--db", db, "--completion-fields", "left,right"])
    assert r.exit_code == 2 and "not human" in r.output
    assert FeedbackStore(db).counts()["items"] == 0
    db2 = f"sqlite:///{tmp_path / 'g.db'}"
    r = _run([path, "--db", db2, "--completion-fields", "left,right"])
    assert r.exit_code == 0, r.output
    assert [(p.chosen, p.rejected) for p in rankings_to_pairs(FeedbackStore(db2))] == [("x", "y")]


def test_import_batch_refuses_an_export_without_rankings(tmp_path):
    store = FeedbackStore(f"sqlite:///{tmp_path / 'f.db'}")
    batch = parse_export([_ranker_task(annotations=[{"completed_by": 1, "was_cancelled": True}])],
                         "x")
    with pytest.raises(ImportFormatError, match="no submitted ranking"):
        import_batch(store, batch, "harmlessness")

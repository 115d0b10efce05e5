"""Rankings made in Label Studio or Argilla, brought into the feedback store (over 400
lines: two tools' export layouts, each field checked with a one-line error).

A team that already labels in one of those tools exports its project and runs
``alignkit label import-rankings FILE``: every task / record becomes an item, every
annotator a labeler of kind ``human`` (named ``label-studio:<id or email>`` or
``argilla:<user id>``), every submitted ranking a ranking — so ``alignkit label export``
turns them into pairs and ``alignkit label status`` reports the same agreement metrics as
for rankings made in alignkit's own app.

Formats read (each tool's documented JSON export):

- **Label Studio**, "JSON" export: a list of tasks ``{"id", "data": {...}, "annotations":
  [{"completed_by", "was_cancelled", "result": [...]}]}``. A ``Ranker`` result
  (``{"type": "ranker", "value": {"ranker": {"<name>": [item ids, best first]}}}``) ranks
  the items of a ``List`` in ``data`` (``[{"id", "title", "body"}]``; the text is ``body``,
  else ``title``); a ``Pairwise`` result (``{"type": "pairwise", "value": {"selected":
  "left" | "right"}}``) ranks two texts of ``data`` (``text1``, ``text2`` as in Label
  Studio's template, or ``--completion-fields``). A cancelled annotation is a skipped
  ranking; predictions (model suggestions) are ignored.
- **Argilla**, ``dataset.records.to_json(path)`` (v2; or ``dataset.to_disk(dir)``, whose
  ``records.json`` is read): records ``{"id", "fields": {...}, "responses": {"<question>":
  [{"value": [...], "user_id"}]}}``; the flattened ``to_list(flatten=True)`` layout
  (``"<question>.responses"``, ``".users"``, ``".status"``) and Argilla 1.x
  ``FeedbackDataset`` records (``"responses": [{"user_id", "values", "status"}]``) too. A
  ``RankingQuestion`` answer is the option values best first (v2) or ``[{"value",
  "rank"}]`` (the server's form, ties allowed); each option must name the record field
  that holds its completion (Argilla's own convention: options ``response-1``,
  ``response-2`` over fields of those names). Drafts are ignored, discarded answers are
  skipped rankings.

Parsing is pure (``parse_*`` → :class:`ImportBatch`); :func:`import_batch` writes, after
the whole file has been checked, so a bad file writes nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from alignkit.feedback.store import FeedbackError, FeedbackStore, RankingInput

Tool = Literal["label-studio", "argilla"]
TOOLS: tuple[Tool, ...] = ("label-studio", "argilla")


class ImportFormatError(ValueError):
    """The file is not the export it should be; one line naming the field and the fix."""


@dataclass(frozen=True)
class ImportedItem:
    prompt: str
    completions: tuple[str, ...]
    key: str  # "<tool>:<file hash>:<task or record id>", kept in each completion's meta
    option_ids: tuple[str, ...]  # the tool's id of each completion (Ranker item id, option)


@dataclass(frozen=True)
class ImportedRanking:
    labeler: str  # tool-qualified name, e.g. "label-studio:7"
    item: int  # index into ImportBatch.items
    ranks: tuple[int, ...] | None  # rank per completion position (1 = best); None = skipped


@dataclass
class ImportBatch:
    tool: Tool
    items: list[ImportedItem] = field(default_factory=list)
    rankings: list[ImportedRanking] = field(default_factory=list)
    ignored: int = 0  # annotations that carry no ranking (drafts, empty results)


@dataclass(frozen=True)
class ImportSummary:
    tool: Tool
    items: int
    rankings: int
    skipped: int
    labelers: tuple[str, ...]
    ignored: int


# --- reading ---------------------------------------------------------------------------------

def read_export(path: str | Path) -> tuple[Any, str]:
    """(parsed JSON, sha256 of the bytes) of a JSON or JSONL export, or an Argilla folder."""
    p = Path(path)
    if p.is_dir():
        p = p / "records.json"  # Argilla's dataset.to_disk(dir)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ImportFormatError(f"cannot read '{p}': {e.strerror} — pass the exported "
                                "file") from None
    digest = hashlib.sha256(raw).hexdigest()[:16]
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ImportFormatError(f"'{p}' is not UTF-8 text (offset {e.start}) — export it "
                                "again as JSON") from None
    try:
        return json.loads(text), digest
    except json.JSONDecodeError as first:
        try:  # JSONL: one record a line
            return [json.loads(line) for line in text.splitlines() if line.strip()], digest
        except json.JSONDecodeError:
            raise ImportFormatError(f"'{p}' is neither JSON nor JSONL ({first.msg} at line "
                                    f"{first.lineno}) — export the project as JSON") from None


def detect_tool(data: Any) -> Tool:
    """Which tool wrote ``data``: Label Studio tasks have ``data`` + ``annotations``."""
    first = data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else None
    if first is None:
        raise ImportFormatError("the export is not a non-empty JSON list of tasks or records "
                                "— export the Label Studio project as JSON or the Argilla "
                                "records with to_json")
    if "annotations" in first and "data" in first:
        return "label-studio"
    if "fields" in first or any(str(k).endswith(".responses") for k in first):
        return "argilla"
    raise ImportFormatError(f"record 0 has neither 'data' + 'annotations' (Label Studio) nor "
                            f"'fields' (Argilla); its keys are {sorted(map(str, first))[:8]}")


# --- Label Studio ----------------------------------------------------------------------------

def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ImportFormatError(f"{where}: expected non-empty text, got {_short(value)}")
    return value


def _short(value: Any) -> str:
    s = repr(value)
    return s if len(s) <= 50 else s[:49] + "…"


def _ls_labeler(annotation: Mapping[str, Any], where: str) -> str:
    who = annotation.get("completed_by")
    if isinstance(who, dict):  # some exports expand the user; the id stays the key
        who = who.get("id") if who.get("id") is not None else who.get("email")
    if who is None or isinstance(who, (list, dict)) or str(who).strip() == "":
        raise ImportFormatError(f"{where}.completed_by: missing — export with annotator ids")
    return f"label-studio:{who}"


def _ls_list_field(data: Mapping[str, Any], where: str) -> str:
    lists = [k for k, v in data.items() if isinstance(v, list) and v
             and all(isinstance(x, dict) and "id" in x for x in v)]
    if len(lists) != 1:
        raise ImportFormatError(f"{where}.data: a Ranker needs exactly one List of "
                                f"{{id, title, body}} items, found {lists or 'none'}")
    return lists[0]


def _ranks_from_order(order: Sequence[Any], ids: Sequence[str], where: str) -> tuple[int, ...]:
    """Best-first ids → rank per position; every id exactly once."""
    order = [str(x) for x in order]
    if sorted(order) != sorted(ids) or len(set(order)) != len(order):
        raise ImportFormatError(f"{where}: ranks {order} must name each of {list(ids)} once "
                                "(a partial ranking or Ranker buckets cannot become pairs)")
    position = {x: i for i, x in enumerate(order)}
    return tuple(position[i] + 1 for i in ids)


_Parsed = list[tuple[str, tuple[int, ...] | None]]  # (labeler, ranks or None = skipped)
_Shape = tuple[str, tuple[str, ...], tuple[str, ...]]  # kind, completion ids, texts


def parse_label_studio(data: Any, source: str, prompt_field: str = "prompt",
                       completion_fields: Sequence[str] | None = None) -> ImportBatch:
    """Label Studio's JSON export → items and rankings (module docstring has the format)."""
    if not isinstance(data, list):
        raise ImportFormatError("Label Studio export: expected a JSON list of tasks")
    batch = ImportBatch("label-studio")
    for t, task in enumerate(data):
        where = _ls_check_task(task, t)
        d = task["data"]
        prompt = _text(d.get(prompt_field), f"{where}.data.{prompt_field}")
        parsed, shape = _ls_annotations(task["annotations"], d, where, completion_fields, batch)
        if shape is None:  # nothing but cancellations or empty results: no item to rank
            batch.ignored += sum(1 for _, r in parsed if r is None)
            continue
        _add_item(batch, prompt, shape[2], shape[1], f"label-studio:{source}:{task.get('id', t)}",
                  parsed, where)
    return batch


def _ls_check_task(task: Any, t: int) -> str:
    """Check that task ``t`` has the JSON export's layout; its name for error messages."""
    where = f"task {t}"
    if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
        raise ImportFormatError(f"{where}: needs a 'data' object — is this a Label Studio "
                                "JSON export?")
    if not isinstance(task.get("annotations"), list):
        raise ImportFormatError(f"{where}: needs an 'annotations' list — export as JSON "
                                "(not JSON-MIN or CSV)")
    return f"task {t} (id {task.get('id', '?')})"


def _ls_annotations(annotations: list[Any], d: Mapping[str, Any], where: str,
                    completion_fields: Sequence[str] | None, batch: ImportBatch
                    ) -> tuple[_Parsed, _Shape | None]:
    """One task's annotations → (labeler, ranks) rows and the completions they rank.

    Every ranking of a task must rank the same completions (the first one's), or the
    rankings could not share one item. Annotations without a ranking count as ignored.
    """
    parsed: _Parsed = []
    shape: _Shape | None = None
    for a, ann in enumerate(annotations):
        aw = f"{where}.annotations[{a}]"
        if not isinstance(ann, dict):
            raise ImportFormatError(f"{aw}: expected an object")
        labeler = _ls_labeler(ann, aw)
        if ann.get("was_cancelled"):
            parsed.append((labeler, None))
            continue
        result = _ls_ranking_result(ann, aw)
        if result is None:
            batch.ignored += 1
            continue
        value = result.get("value") if isinstance(result.get("value"), dict) else {}
        kind = result["type"]
        ids, texts, ranks = (_ls_ranker(value, d, where, aw) if kind == "ranker" else
                             _ls_pairwise(value, d, where, aw, completion_fields))
        if shape is not None and shape != (kind, ids, texts):
            raise ImportFormatError(f"{aw}: ranks other completions than the task's "
                                    "first annotation")
        shape = (kind, ids, texts)
        parsed.append((labeler, ranks))
    return parsed, shape


def _ls_ranking_result(ann: Mapping[str, Any], aw: str) -> dict[str, Any] | None:
    """The annotation's one ranker / pairwise result; None when it has none."""
    results = [r for r in ann.get("result") or []
               if isinstance(r, dict) and r.get("type") in ("ranker", "pairwise")]
    if not results:
        return None
    if len(results) > 1:
        raise ImportFormatError(f"{aw}.result: {len(results)} ranker/pairwise results "
                                "— import one ranking control per project")
    return results[0]


def _ls_ranker(value: Mapping[str, Any], d: Mapping[str, Any], where: str, aw: str
               ) -> tuple[tuple[str, ...], tuple[str, ...], tuple[int, ...]]:
    """A Ranker result → (item ids, texts, rank per item) over the task's one List."""
    list_key = _ls_list_field(d, where)
    ids = tuple(str(x["id"]) for x in d[list_key])
    texts = tuple(_text(x.get("body") or x.get("title"), f"{where}.data.{list_key}[{i}].body")
                  for i, x in enumerate(d[list_key]))
    ranker = value.get("ranker")
    if not isinstance(ranker, dict) or len(ranker) != 1:
        raise ImportFormatError(f"{aw}.result.value.ranker: expected one ordered "
                                f"list of item ids, got {_short(ranker)}")
    order = next(iter(ranker.values()))
    if not isinstance(order, list):
        raise ImportFormatError(f"{aw}.result.value.ranker: not a list of ids")
    return ids, texts, _ranks_from_order(order, ids, f"{aw}.result.value.ranker")


def _ls_pairwise(value: Mapping[str, Any], d: Mapping[str, Any], where: str, aw: str,
                 completion_fields: Sequence[str] | None
                 ) -> tuple[tuple[str, ...], tuple[str, ...], tuple[int, ...]]:
    """A Pairwise result → (field names, texts, ranks) of its two texts in ``data``."""
    left, right = completion_fields or ("text1", "text2")
    texts = (_text(d.get(left), f"{where}.data.{left}"),
             _text(d.get(right), f"{where}.data.{right}"))
    selected = value.get("selected")
    if selected not in ("left", "right"):
        raise ImportFormatError(f"{aw}.result.value.selected: expected 'left' or "
                                f"'right', got {_short(selected)}")
    return (left, right), texts, (1, 2) if selected == "left" else (2, 1)


def _add_item(batch: ImportBatch, prompt: str, texts: Sequence[str], ids: Sequence[str],
              key: str, parsed: _Parsed, where: str) -> None:
    labelers = [who for who, _ in parsed]
    if len(set(labelers)) != len(labelers):
        raise ImportFormatError(f"{where}: one annotator answered twice — keep one answer per "
                                "annotator")
    if len(set(texts)) != len(texts):
        raise ImportFormatError(f"{where}: two completions have the same text — a pair of "
                                "equal texts teaches nothing")
    batch.items.append(ImportedItem(prompt, tuple(texts), key, tuple(ids)))
    index = len(batch.items) - 1
    batch.rankings += [ImportedRanking(who, index, ranks) for who, ranks in parsed]


# --- Argilla ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Answer:
    user: str
    value: Any
    status: str | None


def _argilla_answers(record: Mapping[str, Any], question: str | None, where: str
                     ) -> tuple[str | None, list[_Answer]]:
    """(question name, answers) from any of the three record layouts."""
    responses = record.get("responses")
    found: dict[str, list[_Answer]] = {}
    if isinstance(responses, dict):  # v2 to_json: {question: [{"value", "user_id"}]}
        for q, answers in responses.items():
            if isinstance(answers, list):
                found[str(q)] = [_Answer(str(x.get("user_id")), x.get("value"), x.get("status"))
                                 for x in answers if isinstance(x, dict)]
    elif isinstance(responses, list):  # 1.x: [{"user_id", "values": {q: {"value"}}, "status"}]
        for x in responses:
            if not isinstance(x, dict) or not isinstance(x.get("values"), dict):
                continue
            for q, v in x["values"].items():
                value = v.get("value") if isinstance(v, dict) else None
                found.setdefault(str(q), []).append(
                    _Answer(str(x.get("user_id")), value, x.get("status")))
    else:  # flattened: "q.responses", "q.responses.users", "q.responses.status"
        for k, values in record.items():
            k = str(k)
            if k.endswith(".responses") and isinstance(values, list):
                q = k[: -len(".responses")]
                users = record.get(f"{k}.users") or [None] * len(values)
                status = record.get(f"{k}.status") or [None] * len(values)
                found[q] = [_Answer(str(u), v, s) for v, u, s in zip(values, users, status,
                                                                    strict=False)]
    rankings = {q: a for q, a in found.items()
                if any(isinstance(x.value, list) for x in a)}
    if question is not None:
        return question, found.get(question, [])
    if len(rankings) > 1:
        raise ImportFormatError(f"{where}: several ranking questions {sorted(rankings)} — "
                                "choose one with --question")
    if not rankings:
        return None, []
    q = next(iter(rankings))
    return q, rankings[q]


def _argilla_ranks(value: Any, where: str) -> dict[str, int]:
    """An answer → {option: rank}; list of options best first, or [{"value", "rank"}]."""
    if not isinstance(value, list) or not value:
        raise ImportFormatError(f"{where}: a RankingQuestion answer is a list of options, got "
                                f"{_short(value)}")
    if all(isinstance(v, str) for v in value):
        if len(set(value)) != len(value):
            raise ImportFormatError(f"{where}: an option appears twice in {value}")
        return {v: i + 1 for i, v in enumerate(value)}
    out: dict[str, int] = {}
    for v in value:
        if not (isinstance(v, dict) and isinstance(v.get("value"), str)
                and isinstance(v.get("rank"), int) and not isinstance(v.get("rank"), bool)):
            raise ImportFormatError(f"{where}: expected {{'value': option, 'rank': int}}, got "
                                    f"{_short(v)}")
        if v["value"] in out:
            raise ImportFormatError(f"{where}: option '{v['value']}' is ranked twice")
        out[v["value"]] = v["rank"]
    return out


def parse_argilla(data: Any, source: str, prompt_field: str = "prompt",
                  question: str | None = None) -> ImportBatch:
    """Argilla records with a RankingQuestion → items and rankings (module docstring)."""
    if not isinstance(data, list):
        raise ImportFormatError("Argilla export: expected a JSON list of records")
    batch = ImportBatch("argilla")
    for r, record in enumerate(data):
        where = f"record {r}"
        if not isinstance(record, dict):
            raise ImportFormatError(f"{where}: expected an object")
        fields = record.get("fields") if isinstance(record.get("fields"), dict) else record
        where = f"record {r} (id {record.get('id') or record.get('_server_id') or '?'})"
        prompt = _text(fields.get(prompt_field), f"{where}.fields.{prompt_field}")
        q, answers = _argilla_answers(record, question, where)
        parsed: list[tuple[str, dict[str, int] | None]] = []
        for a, ans in enumerate(answers):
            aw = f"{where}.responses.{q}[{a}]"
            if ans.user in ("None", ""):
                raise ImportFormatError(f"{aw}.user_id: missing — export with user ids")
            if ans.status == "draft":
                batch.ignored += 1
                continue
            if ans.status == "discarded":
                parsed.append((f"argilla:{ans.user}", None))
                continue
            parsed.append((f"argilla:{ans.user}", _argilla_ranks(ans.value, f"{aw}.value")))
        ranked = [ranks for _, ranks in parsed if ranks is not None]
        if not ranked:
            batch.ignored += len(parsed)
            continue
        options = set(ranked[0])
        for ranks in ranked[1:]:
            if set(ranks) != options:
                raise ImportFormatError(f"{where}.responses.{q}: answers rank different options "
                                        f"({sorted(options)} vs {sorted(ranks)})")
        # the record's field order fixes the completion order (and so the pairs' order)
        ids = [k for k in fields if k in options]
        missing = sorted(options - set(ids))
        if missing:
            raise ImportFormatError(f"{where}.fields: ranking option '{missing[0]}' is not a "
                                    "field of the record — name each option after the field "
                                    "holding its completion")
        if len(ids) < 2:
            raise ImportFormatError(f"{where}.responses.{q}: needs at least 2 options to rank")
        k = len(ids)
        texts = [_text(fields[i], f"{where}.fields.{i}") for i in ids]
        rows: _Parsed = []
        for who, ranks in parsed:
            if ranks is not None and not all(1 <= ranks[i] <= k for i in ids):
                raise ImportFormatError(f"{where}.responses.{q}: ranks of {who} must lie in "
                                        f"1..{k}, got {ranks}")
            rows.append((who, None if ranks is None else tuple(ranks[i] for i in ids)))
        rid = record.get("id") or record.get("_server_id") or r
        _add_item(batch, prompt, texts, ids, f"argilla:{source}:{rid}", rows, where)
    return batch


# --- writing ---------------------------------------------------------------------------------

def import_batch(store: FeedbackStore, batch: ImportBatch, criterion: str, round: int = 0,
                 guideline: str | None = None) -> ImportSummary:
    """Write a parsed batch: items, human labelers, rankings (refused as a whole if it was
    imported before, or if a labeler name belongs to a non-human labeler)."""
    if not batch.items:
        raise ImportFormatError(f"the {batch.tool} export holds no submitted ranking — "
                                "nothing to import")
    keys = {it.key for it in batch.items}
    for item in store.items():
        if item.completions and item.completions[0].meta.get("imported_from") in keys:
            raise FeedbackError(f"item '{item.completions[0].meta['imported_from']}' was "
                                f"imported already (item id {item.id}) — import each export "
                                "once", field="imported_from", code="conflict")
    names = sorted({r.labeler for r in batch.rankings})
    existing = {n: store.labeler_by_name(n) for n in names}
    for name, lab in existing.items():
        if lab is not None and lab.kind != "human":
            raise FeedbackError(f"labeler '{name}' exists and is {lab.kind}, not human — "
                                "imported rankings are human", field="labeler", code="conflict")
    metas = [[{"imported_from": it.key, "option": oid} for oid in it.option_ids]
             for it in batch.items]
    ids = store.add_items([(it.prompt, list(it.completions)) for it in batch.items], criterion,
                          round=round, guideline=guideline, metas=metas)
    labeler_ids = {n: lab.id if lab is not None else store.add_labeler(n, "human")[0]
                   for n, lab in existing.items()}
    inputs = []
    for r in batch.rankings:
        item_id = ids[r.item]
        if r.ranks is None:
            inputs.append(RankingInput(labeler_ids[r.labeler], item_id, {}, skipped=True))
            continue
        comp_ids = store.item(item_id).completion_ids
        inputs.append(RankingInput(labeler_ids[r.labeler], item_id,
                                   dict(zip(comp_ids, r.ranks, strict=True))))
    store.submit_rankings(inputs)
    return ImportSummary(batch.tool, len(ids), sum(r.ranks is not None for r in batch.rankings),
                         sum(r.ranks is None for r in batch.rankings), tuple(names),
                         batch.ignored)


def parse_export(data: Any, source: str, tool: Tool | None = None, prompt_field: str = "prompt",
                 completion_fields: Sequence[str] | None = None,
                 question: str | None = None) -> ImportBatch:
    """Either tool's export; ``tool`` None = detect it from the records' keys."""
    tool = tool or detect_tool(data)
    if tool == "label-studio":
        return parse_label_studio(data, source, prompt_field, completion_fields)
    return parse_argilla(data, source, prompt_field, question)

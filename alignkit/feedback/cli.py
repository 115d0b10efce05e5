"""`alignkit label ...`: the labeling workforce's commands (owned by the feedback package).

Thin: parse options, open the store, call one function, print. The database URL comes
from ``--db`` or ``ALIGNKIT_FEEDBACK_DB`` so a team sets it once per shell.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from pathlib import Path
from typing import Annotated, NoReturn

import typer

label_app = typer.Typer(help="Human feedback: serve the labeling app, manage labelers, export.")

DEFAULT_DB = "sqlite:///feedback.db"
Db = Annotated[str, typer.Option("--db", envvar="ALIGNKIT_FEEDBACK_DB",
                                 help="SQLAlchemy URL: sqlite:///path.db or postgresql://…")]
Round = Annotated[int | None, typer.Option("--round", help="Only this feedback round.")]


def _store(db: str):  # imported lazily: `alignkit --help` should not load SQLAlchemy
    from alignkit.feedback.store import FeedbackStore

    return FeedbackStore(db)


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


@label_app.command()
def serve(
    db: Db = DEFAULT_DB,
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    host: Annotated[str, typer.Option(help="Interface; 0.0.0.0 exposes it to the network.")]
    = "127.0.0.1",
    admin_token_file: Annotated[Path | None, typer.Option(
        "--admin-token-file", help="File holding the admin token (or set ALIGNKIT_ADMIN_TOKEN); "
        "a random token is printed if neither is given. Never on the command line: other "
        "users can read a process's arguments.")] = None,
    allowed_host: Annotated[list[str] | None, typer.Option(
        "--allowed-host", help="A name labelers use to reach this server (Host header), "
        "besides loopback and --host; repeat for several.")] = None,
    overlap: Annotated[int, typer.Option(help="Labelers who rank each item.")] = 3,
    round: Round = None,
) -> None:
    """Serve the labeler page (/label), the admin page (/admin) and the JSON API (/docs)."""
    import uvicorn

    from alignkit.feedback.app import create_app, hosts_for

    token = admin_token_from(admin_token_file) or secrets.token_urlsafe(24)
    hosts = hosts_for(host, allowed_host or [])
    store = _store(db)
    base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    typer.echo(f"labeling app on {base}  (database {store.url.split('@')[-1]})")
    typer.echo(f"admin page: {base}/admin#token={token}")
    typer.echo(f"API docs:   {base}/docs")
    uvicorn.run(create_app(store, admin_token=token, overlap=overlap, round=round,
                           allowed_hosts=hosts),
                host=host, port=port, log_level="warning")


def admin_token_from(path: Path | None) -> str | None:
    """The admin token from a file (first line) or ``ALIGNKIT_ADMIN_TOKEN``; None if neither.

    A file others can read is refused: the token opens every labeler's rankings.
    """
    if path is None:
        return os.environ.get("ALIGNKIT_ADMIN_TOKEN") or None
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        _fail(f"--admin-token-file {path}: cannot read it ({getattr(e, 'strerror', e)})")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        _fail(f"--admin-token-file {path}: readable by other users — chmod 600 it")
    if not text or "\n" in text:
        _fail(f"--admin-token-file {path}: must hold the token on one line")
    return text


@label_app.command("add-labeler")
def add_labeler(
    name: Annotated[str, typer.Argument(help="Unique labeler name.")],
    db: Db = DEFAULT_DB,
    kind: Annotated[str, typer.Option(help="human, simulated or ai.")] = "human",
    url: Annotated[str, typer.Option(help="Where the app is served, for the link.")]
    = "http://127.0.0.1:8000",
) -> None:
    """Register a labeler and print their personal token and link (shown only once)."""
    from alignkit.feedback.store import FeedbackError

    try:
        _, token = _store(db).add_labeler(name, kind=kind)  # type: ignore[arg-type]
    except FeedbackError as e:
        _fail(str(e))
    typer.echo(f"token: {token}")
    typer.echo(f"link:  {url.rstrip('/')}/label#token={token}")
    typer.echo("The token is stored hashed and cannot be shown again: send the link now.")


@label_app.command("import")
def import_(
    path: Annotated[Path, typer.Argument(help="JSONL: one {\"prompt\", \"completions\"} a "
                                         "line, optionally \"sensitive\": true/false.")],
    db: Db = DEFAULT_DB,
    criterion: Annotated[list[str] | None, typer.Option(
        help="Criterion shown to labelers; repeat for several (e.g. --criterion helpfulness "
        "--criterion harmlessness).")] = None,
    guideline: Annotated[list[str] | None, typer.Option(
        help="Guideline text for the criterion; with several criteria, 'criterion=text' "
        "once per criterion.")] = None,
    round: Annotated[int, typer.Option(help="Feedback round of these items.")] = 0,
) -> None:
    """Add items to rank from a JSONL file (all lines checked before anything is written).

    A line's ``sensitive`` (or ``harmful``) marks a harmful request: labelers see a
    content warning first and may opt out of such items.
    """
    from alignkit.feedback.store import FeedbackError

    criteria = criterion or ["harmlessness"]
    guides = _guidelines(criteria, guideline or [])
    records: list[tuple[str, list[str]]] = []
    sensitive: list[bool] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        _fail(f"cannot read {path}: {getattr(e, 'strerror', None) or e}")
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            _fail(f"{path}:{lineno}: not JSON ({e.msg})")
        prompt = rec.get("prompt") if isinstance(rec, dict) else None
        comps = rec.get("completions") if isinstance(rec, dict) else None
        if not isinstance(prompt, str) or not isinstance(comps, list):
            _fail(f"{path}:{lineno}: needs {{\"prompt\": str, \"completions\": [str, ...]}}")
        flag = rec.get("sensitive", rec.get("harmful", False))
        if not isinstance(flag, bool):
            _fail(f"{path}:{lineno}: 'sensitive' must be true or false, got {flag!r}")
        records.append((prompt, comps))
        sensitive.append(flag)
    try:
        ids = _store(db).add_items(records, criteria, round=round, guidelines=guides,
                                   sensitive=sensitive)
    except FeedbackError as e:
        _fail(f"{path}: {e}")
    typer.echo(f"imported {len(ids)} items (round {round}, criteria {', '.join(criteria)}; "
               f"{sum(sensitive)} sensitive)")


def _guidelines(criteria: list[str], given: list[str]) -> dict[str, str]:
    """--guideline values: the text itself for one criterion, 'criterion=text' for several."""
    if len(criteria) == 1 and len(given) <= 1 and not any(
            g.split("=", 1)[0] == criteria[0] for g in given if "=" in g):
        return {criteria[0]: given[0]} if given else {}
    out = {}
    for g in given:
        name, eq, text = g.partition("=")
        if not eq or name.strip() not in criteria:
            _fail(f"--guideline '{g[:40]}': with criteria {criteria} write "
                  "--guideline 'criterion=text' naming one of them")
        out[name.strip()] = text.strip()
    return out


@label_app.command("import-rankings")
def import_rankings(
    path: Annotated[Path, typer.Argument(help="Label Studio JSON export, Argilla records "
                                         "JSON/JSONL, or an Argilla to_disk folder.")],
    db: Db = DEFAULT_DB,
    tool: Annotated[str, typer.Option("--from", help="auto, label-studio or argilla.")]
    = "auto",
    criterion: Annotated[str, typer.Option(help="Criterion the rankings were made under.")]
    = "harmlessness",
    guideline: Annotated[str | None, typer.Option(help="Guideline text the labelers read.")]
    = None,
    prompt_field: Annotated[str, typer.Option(help="Data / field key of the prompt.")]
    = "prompt",
    completion_fields: Annotated[str | None, typer.Option(
        help="Label Studio Pairwise: the two data keys compared, 'left,right' "
        "(default text1,text2).")] = None,
    question: Annotated[str | None, typer.Option(
        help="Argilla: the RankingQuestion's name (default: the only ranking question).")]
    = None,
    round: Annotated[int, typer.Option(help="Feedback round of these items.")] = 0,
) -> None:
    """Rankings made in Label Studio or Argilla, as human rankings (the whole file is
    checked before anything is written)."""
    from alignkit.feedback.importers import (
        TOOLS,
        ImportFormatError,
        import_batch,
        parse_export,
        read_export,
    )
    from alignkit.feedback.store import FeedbackError

    if tool != "auto" and tool not in TOOLS:
        _fail(f"--from '{tool}' is unknown — use auto, {' or '.join(TOOLS)}")
    fields = None
    if completion_fields is not None:
        fields = [f.strip() for f in completion_fields.split(",")]
        if len(fields) != 2 or not all(fields):
            _fail(f"--completion-fields '{completion_fields}': give two keys, 'left,right'")
    try:
        data, digest = read_export(path)
        batch = parse_export(data, digest, None if tool == "auto" else tool,  # type: ignore[arg-type]
                             prompt_field, fields, question)
        summary = import_batch(_store(db), batch, criterion, round=round, guideline=guideline)
    except (ImportFormatError, FeedbackError) as e:
        _fail(f"{path}: {e}")
    typer.echo(f"imported {summary.items} items, {summary.rankings} rankings "
               f"({summary.skipped} skipped) by {len(summary.labelers)} human labelers from "
               f"{summary.tool} (criterion '{criterion}', round {round}); "
               f"{summary.ignored} answers without a ranking ignored")


@label_app.command()
def status(
    db: Db = DEFAULT_DB,
    overlap: Annotated[int, typer.Option(help="Labelers wanted per item.")] = 3,
    round: Round = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Progress, per-labeler counts and agreement."""
    from alignkit.feedback.admin import admin_summary, format_status

    summary = admin_summary(_store(db), overlap, round)
    typer.echo(json.dumps(summary, indent=2) if as_json else format_status(summary))


@label_app.command()
def export(
    out: Annotated[Path, typer.Option("--out", help="Pairs JSONL to write.")],
    db: Db = DEFAULT_DB,
    aggregate: Annotated[str, typer.Option(help="majority or bradley_terry.")] = "majority",
    round: Round = None,
    criterion: Annotated[str | None, typer.Option(help="Only this criterion's pairs.")] = None,
    margin: Annotated[bool, typer.Option(
        "--margin", help="Also write TRL's `margin` column (= vote_strength): only for a "
        "reward model trained with a margin, or TRL subtracts one that was never used.")]
    = False,
) -> None:
    """Write every item's aggregated pairwise preferences (TRL RewardTrainer reads it too)."""
    from alignkit.data.types import write_pairs_jsonl
    from alignkit.feedback.pairs import rankings_to_pairs

    if aggregate not in ("majority", "bradley_terry"):
        _fail(f"--aggregate '{aggregate}' is unknown — use majority or bradley_terry")
    pairs = rankings_to_pairs(_store(db), aggregate=aggregate,  # type: ignore[arg-type]
                              round=round, criterion=criterion)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_pairs_jsonl(pairs, out, margin=margin)
    sources = sorted({p.source for p in pairs})
    typer.echo(f"wrote {len(pairs)} pairs to {out} (source: {', '.join(sources) or '-'})")

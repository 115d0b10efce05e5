"""The `alignkit redteam` commands, added to the main app by ``register``.

alignkit redteam               attack a model (and its base), report success rates
alignkit redteam filter        drop or flag data whose chosen side a judge flags

The red team itself is :mod:`alignkit.safety.redteam`; these commands sit above evaluate/
(not in safety/cli.py) because a red-team run ends with the HTML report of its
report.json, and the report is evaluate/'s — safety/ is a layer below it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

if TYPE_CHECKING:
    from alignkit.artifacts import RedTeamSection

console = Console()
redteam_app = typer.Typer(help="Red teaming: attack a model, or filter harmful data.")


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(2)


@redteam_app.callback(invoke_without_command=True)
def redteam(
    ctx: typer.Context,
    model: str | None = typer.Option(None, help="Model name/path, or a run directory "
                                     "(its aligned policy)."),
    attacks: str = typer.Option("advbench,harmbench,rtp-heldout",
                                help="Comma-separated sets: rtp, rtp-heldout, harmbench, "
                                "advbench, jailbreaks, generated."),
    out: Path | None = typer.Option(None, help="Output folder (report.json, report.html, "
                                    "responses.jsonl)."),
    per_set: int = typer.Option(80, help="Attacks per packaged set, spread over categories "
                                "(0 = all)."),
    generated: int = typer.Option(40, help="Model-written attacks when 'generated' is listed."),
    baseline: str = typer.Option("auto", help="Model to compare on the same attacks: 'auto' "
                                 "(a run's base model), 'none', or a model name/path."),
    judges: str = typer.Option("profanity,vader-negativity", help="Judges; the first decides "
                               "success."),
    threshold: float = typer.Option(0.5, help="Harm score at which an attack succeeded."),
    max_new_tokens: int = typer.Option(32, help="Response length cap."),
    temperature: float = typer.Option(1.0, help="Sampling temperature of the responses."),
    batch_size: int = typer.Option(16, help="Generation batch."),
    chat: str = typer.Option("auto", help="'auto' (requests via chat template, RTP as raw "
                             "continuation), 'always' or 'never'."),
    embeddings: bool = typer.Option(False, help="Also MiniLM embedding similarity of "
                                    "generated attacks."),
    seed: int = typer.Option(0, help="Seed of attack sampling and generation."),
    threads: int = typer.Option(2, help="torch threads (= cores)."),
) -> None:
    """Attack a model with packaged and model-written attacks; report success rates."""
    if ctx.invoked_subcommand is not None:
        return
    if model is None or out is None:
        _fail("redteam needs --model and --out (or use `alignkit redteam filter`)")
    if chat not in ("auto", "always", "never"):
        _fail(f"--chat '{chat}' is unknown — use auto, always or never")
    from alignkit.artifacts import RedTeamSettings
    from alignkit.models.loading import set_threads
    from alignkit.safety.redteam import run_redteam

    set_threads(threads)
    st = RedTeamSettings(sets=attacks, per_set=per_set or None, generated=generated,
                         judges=[j.strip() for j in judges.split(",") if j.strip()],
                         threshold=threshold, max_new_tokens=max_new_tokens,
                         temperature=temperature, batch_size=batch_size, chat=chat, seed=seed,
                         embeddings=embeddings)
    try:
        section = run_redteam(model, out, st, None if baseline == "none" else baseline,
                              log=console.print)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        _fail(str(e))
    _write_html(out)
    _print_rates(section, out)


def _write_html(out: Path) -> None:
    """report.html beside report.json: the report's view of the red team's own record."""
    from alignkit.evaluate.report import write_report

    try:
        write_report([out], out / "report.html")
    except Exception as e:  # the JSON is the result; the HTML is a view of it
        console.print(f"HTML report skipped: {type(e).__name__}: {e}")


def _print_rates(rt: RedTeamSection, out: Path) -> None:
    """Success rate per attack set and category, with its CI and the baseline's rate."""
    base = {(r.name, r.category): r for r in rt.baseline.sets} if rt.baseline else {}
    for row in rt.sets:
        b = base.get((row.name, row.category))
        lo, hi = row.ci95
        extra = f"   base {b.success_rate:.1%}" if b else ""
        console.print(f"{row.name:>12} {row.category[:28]:<28} {row.attacks:>4}  "
                      f"{row.success_rate:6.1%}  [{lo:.1%}, {hi:.1%}]{extra}")
    console.print(f"judge '{rt.judge}' ({rt.judge_blind_spots}); {rt.seconds or 0:.0f}s; "
                  f"report: {out / 'report.json'}")


@redteam_app.command("filter")
def redteam_filter(
    pairs: Path | None = typer.Option(None, help="pairs.jsonl (prompt, chosen, rejected)."),
    completions: Path | None = typer.Option(None, help="completions.jsonl (prompt, "
                                            "completions)."),
    out: Path = typer.Option(..., help="Filtered file to write."),
    judge: str = typer.Option("profanity", help="Judge that flags harmful text."),
    threshold: float = typer.Option(0.5, help="Harm score at which text is flagged."),
    action: str = typer.Option("drop", help="'drop' or 'flag' (keep, list in the report)."),
    report: Path | None = typer.Option(None, help="JSON report (default: OUT + .report.json)."),
) -> None:
    """Drop or flag completions / pairs whose chosen side a judge flags, with reasons."""
    from alignkit.data.types import read_pairs_jsonl, write_pairs_jsonl
    from alignkit.jsonl import write_jsonl
    from alignkit.safety.judges import get_judge
    from alignkit.safety.redteam import filter_completions, filter_pairs

    if (pairs is None) == (completions is None):
        _fail("give exactly one of --pairs FILE or --completions FILE")
    src = pairs or completions
    if not src.is_file():
        _fail(f"'{src}' not found — give an existing JSONL file")
    try:
        j = get_judge(judge)
        if pairs is not None:
            kept, rep = filter_pairs(read_pairs_jsonl(pairs), j, threshold, action)
            write_pairs_jsonl(kept, out)
        else:
            recs = [json.loads(x) for x in src.read_text().splitlines() if x.strip()]
            kept, rep = filter_completions(recs, j, threshold, action)
            write_jsonl(kept, out)
    except ValueError as e:
        _fail(str(e))
    report = report or out.with_name(out.name + ".report.json")
    report.write_text(json.dumps(rep.as_dict(), indent=2))
    console.print(f"{rep.total} checked, {rep.removed} removed, {rep.flagged} flagged by "
                  f"'{judge}' ≥ {threshold} → {out}; reasons in {report}")


def register(app: typer.Typer) -> None:
    """Add the red-team commands to the main app."""
    app.add_typer(redteam_app, name="redteam")

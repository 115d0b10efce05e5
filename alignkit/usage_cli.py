"""Commands for using a run's result: export, chat, and data conversion.

Thin wrappers: each parses, calls one function of export.py / chat.py / datasets_io.py,
and turns their one-line errors into exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

console = Console()
data_app = typer.Typer(help="Move data between alignkit, JSONL and Hugging Face datasets.",
                       no_args_is_help=True)


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}", soft_wrap=True)
    raise typer.Exit(2)


def export(
    run_dir: Path = typer.Argument(..., help="Run directory (the --out of `alignkit run`)."),
    out: Path = typer.Option(..., help="New folder for the Hugging Face model."),
    merge: bool = typer.Option(False, help="Merge LoRA into full weights instead of an adapter."),
    push_to_hub: str | None = typer.Option(
        None, "--push-to-hub", help="Then upload it to this Hub model repo (owner/name); needs "
        "HF_HUB_OFFLINE=0 and `hf auth login`. A packaged base goes to REPO-base."),
    private: bool = typer.Option(False, help="Create the Hub repo(s) private."),
) -> None:
    """The run's policy as a Hugging Face model folder with tokenizer and model card."""
    from alignkit.export import export_run
    from alignkit.export_hub import HubError, check_repo_id, hub_client, push_export

    try:
        client = None
        if push_to_hub:  # fail before the slow export
            check_repo_id(push_to_hub)
            client = hub_client()
        path = export_run(run_dir, out, merge=merge)
    except (FileNotFoundError, FileExistsError, RuntimeError, HubError) as e:
        _fail(str(e))
    kind = "merged weights" if merge else "LoRA adapter"
    console.print(f"exported {kind} → {path}  (model card: {path / 'README.md'})")
    if push_to_hub:
        try:
            pushed = push_export(path, push_to_hub, client, private=private)
        except HubError as e:
            _fail(str(e))
        except Exception as e:  # network, auth, quota: the hub's own message, one line
            _fail(f"push to '{push_to_hub}' failed: {str(e).splitlines()[0] if str(e) else e!r}"
                  " — the export is still at " + str(path))
        extra = f" (base weights: {pushed.base_repo})" if pushed.base_repo else ""
        console.print(f"pushed → https://huggingface.co/{pushed.repo}{extra}")


def chat(
    model: Path = typer.Option(..., help="Run directory whose aligned policy to chat with."),
    compare: str | None = typer.Option(
        None, help="'base': answer with the base model (adapters off) side by side."),
    max_new_tokens: int = typer.Option(64, help="Cap on tokens per reply."),
    temperature: float = typer.Option(0.0, help="0 = greedy; > 0 samples at this temperature."),
    top_p: float = typer.Option(1.0, help="Nucleus cutoff when sampling."),
    seed: int = typer.Option(0, help="Sampling seed (replies are reproducible)."),
    template: bool = typer.Option(True, help="Wrap turns in the tokenizer's chat template; "
                                  "--no-template continues the raw text."),
) -> None:
    """Chat in the terminal with a run's aligned policy; /quit or Ctrl-D ends, /reset clears."""
    from alignkit.chat import ChatOptions, ChatSession, chat_loop

    if compare not in (None, "base"):
        _fail(f"--compare '{compare}': only 'base' is supported (the model with adapters off)")
    opts = ChatOptions(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                       seed=seed, template=template)
    try:
        with console.status(f"loading {model}"):
            session = ChatSession.from_run(model, opts, compare_base=compare == "base")
    except (FileNotFoundError, RuntimeError, ValueError) as e:
        _fail(str(e))
    chat_loop(session, sys.stdin, console)


@data_app.command("convert")
def data_convert(
    src: Path = typer.Argument(..., help="A .jsonl file or a datasets folder (save_to_disk)."),
    dst: Path = typer.Argument(..., help="The other format: a folder or a .jsonl file."),
    to: str | None = typer.Option(None, "--to", help="trl or openrlhf: write a pairs file as "
                                  "that trainer reads it (see docs/pairs.md)."),
    margin: bool = typer.Option(False, "--margin", help="With --to: add the margin column "
                                "(= vote_strength), only for a reward model trained with one."),
) -> None:
    """JSONL ↔ Hugging Face datasets folder, with TRL's column names; or pairs → TRL /
    OpenRLHF reward-model datasets with --to."""
    from alignkit.datasets_io import convert

    try:
        msg = convert(src, dst, to=to, margin=margin)  # type: ignore[arg-type]
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        _fail(str(e))
    console.print(msg)


def register(app: typer.Typer) -> None:
    """Add this package's commands and sub-apps to the main app."""
    app.command("export")(export)
    app.command("chat")(chat)
    app.add_typer(data_app, name="data")

"""Commands of this package, added to the main `alignkit` app by ``register``.

alignkit constitution revise   SL-CAI: answer → critique → revise; writes SFT data and pairs
alignkit sft                   LoRA fine-tuning on the revisions

The red-team commands are in :mod:`alignkit.redteam_cli`: their report ends with the HTML
view, which lives in evaluate/, a layer above this package.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

console = Console()
constitution_app = typer.Typer(help="Constitutional AI: critique and revise with principles.",
                               no_args_is_help=True)


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(2)


def _threads(n: int) -> None:
    from alignkit.models.loading import set_threads

    set_threads(n)


def _prompts(spec: str, n: int, seed: int) -> list[str]:
    """An attack set name (advbench, harmbench, ...) or a prompt set / file of data.prompts."""
    from alignkit.data.prompts import load_prompts
    from alignkit.safety.attacks import ATTACK_SETS, load_attacks

    if spec in ATTACK_SETS:
        return [a.text for a in load_attacks(spec, n, seed)]
    prompts = load_prompts(spec)
    import random

    return random.Random(seed).sample(prompts, min(n, len(prompts)))


@constitution_app.command("revise")
def constitution_revise(
    model: str = typer.Option("smollm2-135m-instruct", help="Model name/path or run directory."),
    prompts: str = typer.Option("harmbench", help="Attack set (harmbench, advbench, rtp, ...) "
                                "or a prompt set / .txt / .jsonl file."),
    n: int = typer.Option(32, help="Prompts to answer and revise."),
    rounds: int = typer.Option(1, help="Critique → revision rounds per prompt."),
    constitution: Path | None = typer.Option(None, help="Constitution YAML (default: "
                                             "constitutions/default.yaml)."),
    few_shot: bool = typer.Option(True, help="Show a principle's examples before critiquing."),
    max_new_tokens: int = typer.Option(64, help="Tokens per answer/critique/revision."),
    out: Path = typer.Option(..., help="Folder for revisions.jsonl, sft.jsonl, pairs.jsonl."),
    seed: int = typer.Option(0, help="Seed of prompt choice, principles and sampling."),
    threads: int = typer.Option(2, help="torch threads (= cores)."),
) -> None:
    """Answer red-team prompts, critique under random principles, revise (SL-CAI)."""
    from alignkit.data.types import write_pairs_jsonl
    from alignkit.jsonl import write_jsonl
    from alignkit.safety.constitution import (
        LMGenerator,
        critique_and_revise,
        load_constitution,
        revision_pairs,
        revisions_to_dicts,
        sft_records,
    )
    from alignkit.safety.redteam import load_target

    _threads(threads)
    try:
        const = load_constitution(constitution)
        texts = _prompts(prompts, n, seed)
        lm, tok, _ = load_target(model)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        _fail(str(e))
    gen = LMGenerator(lm, tok, max_new_tokens, temperature=0.7, seed=seed)
    with console.status(f"SL-CAI on {len(texts)} prompts × {rounds} round(s)"):
        revs = critique_and_revise(gen, texts, const, rounds, seed, few_shot=few_shot)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(revisions_to_dicts(revs), out / "revisions.jsonl")
    write_jsonl(sft_records(revs), out / "sft.jsonl")
    pairs = revision_pairs(revs)
    write_pairs_jsonl(pairs, out / "pairs.jsonl")
    console.print(f"{len(revs)} prompts, {len(pairs)} changed by revision → {out}/sft.jsonl, "
                  f"{out}/pairs.jsonl (source 'ai')")


def sft(
    data: Path = typer.Option(..., help="JSONL of {prompt, completion} (e.g. sft.jsonl)."),
    model: str = typer.Option("smollm2-135m-instruct", help="Base model name or path."),
    out: Path = typer.Option(..., help="Output folder: policy/ adapter + config.yaml."),
    epochs: int = typer.Option(2, help="Passes over the data."),
    lr: float = typer.Option(2e-4, help="AdamW learning rate for the LoRA adapters."),
    batch_size: int = typer.Option(8, help="Examples per step."),
    chat_template: bool = typer.Option(True, help="Wrap prompts in the chat template."),
    threads: int = typer.Option(2, help="torch threads (= cores)."),
) -> None:
    """Fine-tune the policy (LoRA) on SL-CAI revisions."""
    import yaml

    from alignkit.config import load_config
    from alignkit.models.loading import load_causal_lm, load_tokenizer
    from alignkit.models.policy import Policy
    from alignkit.safety.sft import sft_train

    _threads(threads)
    if not data.is_file():
        _fail(f"--data '{data}' not found — run `alignkit constitution revise` first")
    records = [json.loads(line) for line in data.read_text().splitlines() if line.strip()]
    cfg = load_config(None, {"model.name": model})
    tok = load_tokenizer(model)
    policy = Policy(load_causal_lm(model, tok, cfg.model.dtype), cfg.model)
    try:
        rep = sft_train(policy, tok, records, epochs, lr, batch_size,
                        chat_template=chat_template,
                        on_step=lambda s, loss: console.print(f"step {s}  loss {loss:.3f}"))
    except ValueError as e:
        _fail(str(e))
    out.mkdir(parents=True, exist_ok=True)
    policy.lm.save_pretrained(out / "policy")
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(), sort_keys=False))
    (out / "sft_report.json").write_text(json.dumps(
        {"examples": rep.examples, "steps": rep.steps, "losses": rep.losses}, indent=2))
    console.print(f"{rep.examples} examples, {rep.steps} steps, loss {rep.first_loss:.3f} → "
                  f"{rep.last_loss:.3f}; adapter in {out / 'policy'}")


def register(app: typer.Typer) -> None:
    """Add this package's commands and sub-apps to the main app."""
    app.add_typer(constitution_app, name="constitution")
    app.command("sft")(sft)

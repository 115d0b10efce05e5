"""The `alignkit` command: parse, load config, call one stage. No logic lives here."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing downloads at run time by default
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # our own bars say what matters

import typer  # noqa: E402
from rich.console import Console  # noqa: E402

from alignkit import redteam_cli, usage_cli  # noqa: E402
from alignkit.config import ConfigError, load_config, parse_override  # noqa: E402
from alignkit.feedback.cli import label_app  # noqa: E402
from alignkit.guard import cli as guard_cli  # noqa: E402
from alignkit.safety import cli as safety_cli  # noqa: E402

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="alignkit: the whole RLHF cycle on one CPU.")
app.add_typer(label_app, name="label")
for _module in (safety_cli, redteam_cli, guard_cli, usage_cli):
    _module.register(app)
reward_app = typer.Typer(help="Train and query Bradley–Terry reward models.")
app.add_typer(reward_app, name="reward")
console = Console()


def _quiet_transformers() -> None:
    """transformers' per-load "Loading weights" bars drown the run log; ours remain."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


_quiet_transformers()


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}", soft_wrap=True)
    raise typer.Exit(2)


@app.command()
def run(
    config: Path = typer.Option(Path("configs/default.yaml"), help="YAML config file."),
    out: Path = typer.Option(Path("runs/default"), help="Run directory (resumed if it exists)."),
    set_: list[str] = typer.Option([], "--set", help="Override a field: section.key=value."),
    rounds: int | None = typer.Option(None, help="Feedback→RM→PPO rounds (overrides config)."),
    ray_address: str | None = typer.Option(
        None, help="Run PPO on this Ray cluster ('auto' = the local `ray start` one)."),
) -> None:
    """Run the cycle: generate → feedback → pairs → reward → ppo → evaluate → report."""
    from alignkit.cycle import run_cycle

    try:
        overrides = dict(_parse_override(s) for s in set_)
        if rounds is not None:
            overrides["rounds"] = rounds
        if ray_address is not None:
            overrides.update({"distributed.backend": "ray", "distributed.ray_address": ray_address})
        cfg = load_config(config, overrides)
    except ConfigError as e:
        _fail(str(e))
    from alignkit.tracking import TrackerError

    try:
        outcome = run_cycle(cfg, out, console)
    except (TrackerError, FileNotFoundError) as e:
        _fail(str(e))
    if outcome != "done":
        raise typer.Exit(130 if outcome == "interrupted" else 1)


def _parse_override(text: str) -> tuple[str, object]:
    return parse_override(text)


@app.command()
def report(run_dirs: list[Path] = typer.Argument(..., help="Run directories."),
           out: Path = typer.Option(Path("report.html"), help="HTML file to write.")) -> None:
    """One self-contained HTML report of one or more runs."""
    from alignkit.evaluate.report import write_report
    from alignkit.rundir import RunDir

    for d in run_dirs:
        if not d.is_dir() or not RunDir(d).report_json.exists():
            _fail(f"run directory '{d}' has no report.json — finish `alignkit run` first")
    console.print(f"report: {write_report(run_dirs, out)}")


def _config_and_pairs(config: Path | None, set_: list[str], pairs: Path):
    """The prologue of every command that trains on a pairs file: config, data, threads."""
    from alignkit.data.types import read_pairs_jsonl
    from alignkit.models.loading import configure_process

    try:
        cfg = load_config(config, dict(_parse_override(s) for s in set_))
        data = read_pairs_jsonl(pairs)
    except (ConfigError, FileNotFoundError, ValueError) as e:
        _fail(str(e))
    configure_process(cfg.threads, cfg.keep_freed_memory)
    return cfg, data


@reward_app.command("train")
def reward_train(
    pairs: Path = typer.Option(..., help="JSONL with prompt, chosen, rejected (TRL format)."),
    out: Path = typer.Option(..., help="Folder for the trained model (Hugging Face format)."),
    config: Path | None = typer.Option(None, help="YAML config; its `reward` section is used."),
    set_: list[str] = typer.Option([], "--set", help="Override: reward.key=value."),
) -> None:
    """Train a Bradley–Terry reward model on a pairs file."""
    from alignkit.stages.reward import train_one

    cfg, data = _config_and_pairs(config, set_, pairs)
    _, rep = train_one(cfg, data, out)
    rep.write(out / "reward_report.json")
    console.print(f"held-out accuracy {rep.eval_accuracy:.3f} on {rep.pairs_eval} pairs; "
                  f"ECE {rep.eval_ece:.3f}; saved to {out}")


@reward_app.command("score")
def reward_score(
    model: Path = typer.Option(..., help="Reward model folder."),
    prompt: str | None = typer.Option(None, help="Prompt text."),
    completion: str | None = typer.Option(None, help="Completion text."),
    jsonl: Path | None = typer.Option(None, help="JSONL of {prompt, completion} records."),
) -> None:
    """Print the normalised reward of one pair or of every record of a JSONL file."""
    import json

    from alignkit.reward.model import RewardModel

    if jsonl is None and (prompt is None or completion is None):
        _fail("give --prompt and --completion, or --jsonl FILE")
    try:
        rm = RewardModel.load(model)
    except FileNotFoundError as e:
        _fail(str(e))
    if jsonl is not None:
        recs = [json.loads(x) for x in jsonl.read_text().splitlines() if x.strip()]
        scores = rm.score([r["prompt"] for r in recs], [r["completion"] for r in recs])
        for r, s in zip(recs, scores.tolist(), strict=True):
            print(json.dumps({**r, "reward": s}))
    else:
        print(f"{float(rm.score([prompt], [completion])[0]):.4f}")


@app.command()
def dpo(
    pairs: Path = typer.Option(..., help="JSONL with prompt, chosen, rejected (TRL format)."),
    out: Path = typer.Option(..., help="Output folder: policy/ (LoRA adapter), dpo_report.json."),
    config: Path | None = typer.Option(None, help="YAML config; its model and dpo sections."),
    set_: list[str] = typer.Option([], "--set", help="Override: dpo.key=value."),
) -> None:
    """DPO on exported pairs: the offline baseline (no reward model, no sampling)."""
    import json

    import yaml

    from alignkit.models.build import build_policy
    from alignkit.rl.dpo import train_dpo

    cfg, data = _config_and_pairs(config, set_, pairs)
    built = build_policy(cfg.model, cfg.seed)
    policy, tok = built.policy, built.tokenizer
    rep = train_dpo(policy, tok, data, cfg.dpo)
    out.mkdir(parents=True, exist_ok=True)
    policy.lm.save_pretrained(out / "policy")
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(), sort_keys=False))
    (out / "dpo_report.json").write_text(json.dumps(rep.__dict__, indent=2))
    console.print(f"DPO on {rep.pairs} pairs, {rep.steps} steps: implicit-reward accuracy "
                  f"{rep.reward_accuracy:.3f}, mean margin {rep.mean_margin:+.3f}; saved to {out}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()

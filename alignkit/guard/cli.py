"""Commands of this package, added to the main `alignkit` app by ``register``."""

from pathlib import Path

import typer

demo_app = typer.Typer(help="Demonstrations that run end to end on a CPU.",
                       no_args_is_help=True)


@demo_app.command("reward-hacking")
def reward_hacking(
    out: Path = typer.Option(Path("runs/demo-reward-hacking"), help="Output folder."),
    model: str = typer.Option("tiny-llama", help="Policy: 'tiny-llama' (CI, ~1 min) or "
                              "'smollm2-135m-instruct' (slow: ~25 s per step)."),
    steps: int = typer.Option(20, min=2, help="PPO steps per run."),
    seed: int = typer.Option(0, help="Seed of the model, sampling and minibatches."),
    threads: int = typer.Option(1, min=1, help="torch threads (= free cores, never more)."),
) -> None:
    """Train the same hackable task twice — β = 0 with alarms logged only, then with the KL
    penalty and the guard acting — and compare the final gold scores."""
    from alignkit.guard.demo import run_demo
    from alignkit.models.loading import set_threads

    set_threads(threads)
    s = run_demo(out, model=model, steps=steps, seed=seed, log=typer.echo)
    for name, r in s["runs"].items():
        f = r["final"]
        typer.echo(f"{name:>9}: gold {f['gold']:.3f}  proxy {f['proxy']:.3f}  "
                   f"√KL {f['sqrt_kl']:.2f}  alarms {len(r['alarms'])}  ({r['stopped']})")
    typer.echo(f"checks: {s['checks']}\nsummary: {Path(out) / 'summary.json'}\n"
               f"plot: {s['plot']}\nreport: {s['report_html']}")
    if not all(s["checks"].values()):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add this package's commands and sub-apps to the main app."""
    app.add_typer(demo_app, name="demo")

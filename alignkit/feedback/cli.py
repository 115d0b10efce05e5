"""`alignkit label ...`: the labeling workforce's commands (owned by the feedback package)."""

import typer

label_app = typer.Typer(help="Human feedback: serve the labeling app, manage labelers, export.")

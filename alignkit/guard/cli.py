"""Commands of this package, added to the main `alignkit` app by ``register``."""

import typer


def register(app: typer.Typer) -> None:
    """Add this package's commands and sub-apps to the main app."""

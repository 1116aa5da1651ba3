"""`cadenza models` commands (issue 6): parse, call a service, render."""

from __future__ import annotations

import typer

app = typer.Typer(help="models", no_args_is_help=True)

"""Send-time policies: frequency caps and quiet hours, per workspace and per journey. (issue 5)"""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `cadenza` command."""

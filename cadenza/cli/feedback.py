"""Public feedback routes: open and click tracking, unsubscribe and the preference centre,
provider event webhooks and DSNs. (issue 5)"""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `cadenza` command."""

"""SMS and webhook endpoints: Twilio status callbacks and inbound keywords, signed webhook
endpoints. (issue 5)"""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `cadenza` command."""

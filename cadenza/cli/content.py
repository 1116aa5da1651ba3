"""Templates beyond save and preview: snippets, sender identities, verified test addresses
and test sends, locales. (issue 5)"""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's commands to the `cadenza` command."""

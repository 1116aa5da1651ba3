"""A JSON response rendered with orjson (fast, and handles the dicts our queries return)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


class JSON(Response):
    """application/json rendered by orjson."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        """Serialise `content`."""
        # Row keys are SQLAlchemy's `quoted_name`, a str subclass: allow it as a key.
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)

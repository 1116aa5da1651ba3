"""Public feedback routes: open and click tracking, unsubscribe and the preference centre,
provider event webhooks and DSNs. (issue 5)"""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()

"""SMS and webhook endpoints: Twilio status callbacks and inbound keywords, signed webhook
endpoints. (issue 5)"""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()

"""Send-time policies: frequency caps and quiet hours, per workspace and per journey. (issue 5)"""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()

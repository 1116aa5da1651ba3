"""Templates beyond save and preview: snippets, sender identities, verified test addresses
and test sends, locales. (issue 5)"""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter()

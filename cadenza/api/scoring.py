"""/api routes for issue 6 (scoring); each route parses, calls a service, renders."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/api")

"""/api routes for issue 6 (leads); each route parses, calls a service, renders."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/api")

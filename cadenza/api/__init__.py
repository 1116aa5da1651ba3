"""HTTP only: FastAPI routes, auth and error mapping; no business rules live here."""

from cadenza.api.app import build_context, create_app

__all__ = ["build_context", "create_app"]

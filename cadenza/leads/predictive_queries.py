"""SQL over `score_models` (kind predictive), `model_versions` and `contact_scores`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cadenza.leads.features import gc_paused
from cadenza.store import fetch, insert_rows, loads, schema

KIND = "predictive"
WRITE_CHUNK = 50_000


@dataclass(frozen=True)
class ModelRow:
    """A `score_models` row of kind predictive."""

    id: int
    key: str
    name: str
    kind: str
    definition: dict[str, Any]
    status: str
    created_at: int
    updated_at: int
    scored_at: int | None


@dataclass(frozen=True)
class VersionRow:
    """A `model_versions` row (the artifact is read only when asked for)."""

    id: int
    model_id: int
    version: int
    status: str
    spec: dict[str, Any]
    metrics: dict[str, Any]
    rows: int
    note: str
    trained_at: int
    promoted_at: int | None

    def to_dict(self, *, full: bool = True) -> dict[str, Any]:
        """JSON-ready; without `full`, only the headline metrics."""
        metrics = self.metrics if full else {
            k: self.metrics.get(k) for k in ("auc", "brier", "base_rate")}
        return {"version": self.version, "status": self.status, "rows": self.rows,
                "note": self.note, "trained_at": self.trained_at,
                "promoted_at": self.promoted_at, "metrics": metrics,
                **({"spec": self.spec} if full else {})}


_m = schema.score_models
_v = schema.model_versions
_VERSION_COLUMNS = (_v.c.id, _v.c.model_id, _v.c.version, _v.c.status, _v.c.spec,
                    _v.c.metrics, _v.c.rows, _v.c.note, _v.c.trained_at, _v.c.promoted_at)


def model_by_key(conn: Connection, key: str) -> ModelRow | None:
    """The score model called `key`, of any kind."""
    row = conn.execute(sa.select(_m).where(_m.c.key == key)).mappings().first()
    return ModelRow(**dict(row)) if row else None


def predictive_models(conn: Connection) -> list[ModelRow]:
    """Every predictive model, by key."""
    rows = conn.execute(sa.select(_m).where(_m.c.kind == KIND).order_by(_m.c.key)).mappings()
    return [ModelRow(**dict(r)) for r in rows]


def insert_model(conn: Connection, key: str, name: str, definition: dict[str, Any],
                 now: int) -> int:
    """A new predictive model row; its id."""
    result = conn.execute(sa.insert(_m).values(
        key=key, name=name, kind=KIND, definition=definition, status="active",
        created_at=now, updated_at=now))
    return int(result.inserted_primary_key[0])  # type: ignore[index]


def update_model(conn: Connection, model_id: int, name: str, definition: dict[str, Any],
                 now: int) -> None:
    """Replace a model's definition."""
    conn.execute(sa.update(_m).where(_m.c.id == model_id).values(
        name=name, definition=definition, updated_at=now))


def mark_scored(conn: Connection, model_id: int, now: int) -> None:
    """Record when every contact was last scored."""
    conn.execute(sa.update(_m).where(_m.c.id == model_id).values(scored_at=now))


def _version(row: Any) -> VersionRow:
    return VersionRow(*row)


def versions(conn: Connection, model_id: int) -> list[VersionRow]:
    """Every version of a model, newest first."""
    rows = conn.execute(sa.select(*_VERSION_COLUMNS).where(_v.c.model_id == model_id)
                        .order_by(_v.c.version.desc()))
    return [_version(r) for r in rows]


def version(conn: Connection, model_id: int, number: int) -> VersionRow | None:
    """One version by number."""
    row = conn.execute(sa.select(*_VERSION_COLUMNS).where(
        _v.c.model_id == model_id, _v.c.version == number)).first()
    return _version(row) if row else None


def live_version(conn: Connection, model_id: int) -> VersionRow | None:
    """The version that scores contacts, if any."""
    row = conn.execute(sa.select(*_VERSION_COLUMNS).where(
        _v.c.model_id == model_id, _v.c.status == "live")).first()
    return _version(row) if row else None


def artifact(conn: Connection, version_id: int) -> bytes:
    """The fitted model of a version (JSON bytes)."""
    value = conn.execute(sa.select(_v.c.artifact).where(_v.c.id == version_id)).scalar_one()
    return bytes(value)


def insert_version(conn: Connection, model_id: int, spec: dict[str, Any],
                   metrics: dict[str, Any], blob: bytes, rows: int, now: int,
                   status: str = "candidate", note: str = "") -> int:
    """A new version numbered after the last one; its number."""
    top = conn.execute(sa.select(sa.func.coalesce(sa.func.max(_v.c.version), 0))
                       .where(_v.c.model_id == model_id)).scalar_one()
    number = int(top) + 1
    conn.execute(sa.insert(_v).values(
        model_id=model_id, version=number, status=status, spec=spec, metrics=metrics,
        artifact=blob, rows=rows, note=note, trained_at=now))
    return number


def set_status(conn: Connection, version_id: int, status: str, *, note: str | None = None,
               promoted_at: int | None = None) -> None:
    """Move a version to `status` (and record a note or the promotion time)."""
    values: dict[str, Any] = {"status": status}
    if note is not None:
        values["note"] = note
    if promoted_at is not None:
        values["promoted_at"] = promoted_at
    conn.execute(sa.update(_v).where(_v.c.id == version_id).values(**values))


def current_scores(conn: Connection, model_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(contact ids ascending, scores) stored for a model."""
    mark = "%s" if conn.dialect.name == "postgresql" else "?"
    rows = fetch(conn, f"SELECT contact_id, score FROM contact_scores WHERE model_id = {mark} "
                 "ORDER BY contact_id", [model_id])
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    matrix = np.array(rows, dtype=np.float64)
    return matrix[:, 0].astype(np.int64), matrix[:, 1]


def scored_version(conn: Connection, model_id: int) -> int | None:
    """The version the last scoring round used (every stored row carries it)."""
    s = schema.contact_scores
    value = conn.execute(sa.select(s.c.explanation).where(s.c.model_id == model_id)
                         .limit(1)).scalar()
    if value is None:
        return None
    found = loads(value).get("version")
    return int(found) if isinstance(found, int) else None


def write_scores(conn: Connection, model_id: int, ids: Sequence[int], scores: Sequence[float],
                 explanations: Sequence[str], now: int) -> None:
    """Upsert scores with their explanations (JSON text), in chunks of executemany."""
    columns = ("model_id", "contact_id", "score", "explanation", "as_of")
    with gc_paused():
        _write_chunks(conn, model_id, columns, ids, scores, explanations, now)


def _write_chunks(conn: Connection, model_id: int, columns: Sequence[str], ids: Sequence[int],
                  scores: Sequence[float], explanations: Sequence[str], now: int) -> None:
    for start in range(0, len(ids), WRITE_CHUNK):
        stop = start + WRITE_CHUNK
        insert_rows(conn, schema.contact_scores, columns,
                    [(model_id, cid, score, text, now) for cid, score, text in
                     zip(ids[start:stop], scores[start:stop], explanations[start:stop],
                         strict=True)],
                    upsert_on=("model_id", "contact_id"),
                    update=("score", "explanation", "as_of"))


def stored_explanation(conn: Connection, model_id: int,
                       contact_id: int) -> tuple[float, dict[str, Any], int] | None:
    """(score, explanation, as_of) stored for one contact."""
    s = schema.contact_scores
    row = conn.execute(sa.select(s.c.score, s.c.explanation, s.c.as_of).where(
        s.c.model_id == model_id, s.c.contact_id == contact_id)).first()
    if row is None:
        return None
    return float(row[0]), loads(row[1]), int(row[2])


def event_name_exists(conn: Connection, name: str) -> bool:
    """Whether any event of that name was ever recorded (an index seek)."""
    e = schema.events
    return conn.execute(sa.select(e.c.id).where(e.c.name == name).limit(1)).first() is not None


def attribute_known(conn: Connection, name: str) -> bool:
    """Whether `name` is a declared field or appears on some contact."""
    declared = conn.execute(sa.select(schema.fields.c.name).where(
        schema.fields.c.name == name)).first()
    if declared is not None:
        return True
    if conn.dialect.name == "postgresql":
        return bool(fetch(conn, "SELECT 1 FROM contacts WHERE attributes ? %s LIMIT 1",
                          [name]))
    return bool(fetch(conn, "SELECT 1 FROM contacts WHERE json_type(attributes, ?) IS NOT NULL "
                      "LIMIT 1", ['$."' + name.replace('"', '\\"') + '"']))

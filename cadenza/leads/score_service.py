"""Use cases of rule-based scoring: keep models, score now, read scores and explain them.

Models live in `score_models` (kind "rules" or "matrix"; the predictive kind belongs to
`cadenza.leads.predictive` and is only listed here). Saving checks the whole document
(`cadenza.leads.models`), the declared attributes its rules test, and for a matrix that both
axes are active graded rules models. Scoring writes `contact_scores` through
`cadenza.leads.score_queries`, in one transaction per model.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cadenza.clock import Clock
from cadenza.contacts import list_fields
from cadenza.errors import Conflict, NotFound, ValidationFailed
from cadenza.leads import score_queries as q
from cadenza.leads.models import (
    AttributeRule,
    EventRule,
    MatrixModel,
    RulesModel,
    ScoreModel,
    parse_model,
)
from cadenza.segments import load_facts
from cadenza.store import Store, fetch, loads, schema

_m = schema.score_models
OWN_KINDS = ("rules", "matrix")
MAX_TOP = 1000
MAX_BUCKETS = 100


@dataclass(frozen=True)
class StoredModel:
    """A model as stored: its spec and its bookkeeping."""

    id: int
    model: ScoreModel
    status: str
    created_at: int
    updated_at: int
    scored_at: int | None

    @property
    def key(self) -> str:
        return self.model.key

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "key": self.key, "name": self.model.name,
                "kind": self.model.kind, "status": self.status,
                "definition": self.model.to_json(), "created_at": self.created_at,
                "updated_at": self.updated_at, "scored_at": self.scored_at}


def _declared(conn: Connection) -> tuple[dict[str, str], dict[str, str]]:
    """Declared contact and company fields, name -> type."""
    declared = list_fields(conn)
    return ({f.name: f.type for f in declared if f.entity == "contact"},
            {f.name: f.type for f in declared if f.entity == "company"})


def load_models(conn: Connection, *, active_only: bool = True) -> list[StoredModel]:
    """Rules and matrix models, rules first (matrices read their axes' fresh scores)."""
    query = sa.select(_m).where(_m.c.kind.in_(OWN_KINDS))
    if active_only:
        query = query.where(_m.c.status == "active")
    rows = list(conn.execute(query.order_by(_m.c.id)).mappings())
    stored = [StoredModel(r["id"], parse_model(loads(r["definition"])), r["status"],
                          r["created_at"], r["updated_at"], r["scored_at"]) for r in rows]
    by_key = {s.key: s.model for s in stored}
    resolved = []
    for s in stored:
        model = s.model
        if isinstance(model, MatrixModel):
            rows_model, columns_model = by_key.get(model.rows), by_key.get(model.columns)
            if not isinstance(rows_model, RulesModel) or not isinstance(columns_model,
                                                                        RulesModel):
                continue  # an axis was archived meanwhile: the matrix waits for it
            model = dataclasses.replace(
                model, row_grades=tuple(g.grade for g in rows_model.grades),
                column_grades=tuple(g.grade for g in columns_model.grades))
        resolved.append(dataclasses.replace(s, model=model))
    return sorted(resolved, key=lambda s: (s.model.kind == "matrix", s.id))


def score_models(conn: Connection, models: Sequence[StoredModel], now: int,
                 contact_ids: Iterable[int] | None = None,
                 progress: Callable[[str], None] | None = None) -> list[q.Outcome]:
    """Score `models` (rules before matrices) for every live contact, or for `contact_ids`."""
    ids = None if contact_ids is None else sorted(set(contact_ids))
    scoped = ids is not None
    q.prepare(conn, ids)
    outcomes = []
    by_key = {s.key: s.id for s in models}
    mark = "%s" if conn.dialect.name == "postgresql" else "?"
    for stored in models:
        model = stored.model
        if isinstance(model, RulesModel):
            if not scoped:  # the listener keeps the ledger itself, event by event
                q.catch_up_ledger(conn, model, stored.id, now)
            q.rules_final(conn, model, stored.id, now, scoped)
        else:
            row_id = by_key.get(model.rows) or _model_id(conn, model.rows)
            column_id = by_key.get(model.columns) or _model_id(conn, model.columns)
            q.matrix_final(conn, model, row_id, column_id, scoped)
        outcomes.append(q.commit_scores(conn, model, stored.id, now, scoped))
        if not scoped:
            conn.exec_driver_sql(f"UPDATE score_models SET scored_at = {mark} WHERE id = {mark}",
                                 (now, stored.id))
        if progress:
            progress(stored.key)
    return outcomes


def _model_id(conn: Connection, key: str) -> int:
    found = conn.execute(sa.select(_m.c.id).where(_m.c.key == key)).scalar()
    if found is None:
        raise NotFound("score model", key)
    return int(found)


class ScoreService:
    """Score models and contacts' scores."""

    def __init__(self, store: Store, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    # --- models ------------------------------------------------------------------------------

    def validate(self, document: Any) -> ScoreModel:
        """The model a document defines, or the first thing wrong with it."""
        with self.store.read() as conn:
            return self._checked(conn, document)

    def _checked(self, conn: Connection, document: Any) -> ScoreModel:
        fields, company_fields = _declared(conn)
        model = parse_model(document, fields, company_fields)
        if isinstance(model, MatrixModel):
            active = {s.key: s.model for s in load_models(conn)}
            for axis in ("rows", "columns"):
                key = getattr(model, axis)
                other = active.get(key)
                if other is None:
                    raise ValidationFailed(axis, f"{key!r} is not an active score model; "
                                                 "create it first (kind rules, with grades)")
                if not isinstance(other, RulesModel) or not other.grades:
                    raise ValidationFailed(axis, f"{key!r} has no grades; a matrix combines "
                                                 "two graded rules models")
        return model

    def create(self, document: Any) -> StoredModel:
        """Create a model; Conflict when its key is taken."""
        stored, _created = self.save(document, create_only=True)
        return stored

    def save(self, document: Any, *, key: str | None = None,
             create_only: bool = False) -> tuple[StoredModel, bool]:
        """Create a model, or replace the one with the document's key; (stored, created).
        With `key`, the document's key must be that one (a model never changes key)."""
        now = self.clock.now_ms()
        if key is not None and isinstance(document, Mapping) and "key" not in document:
            document = {**document, "key": key}
        with self.store.begin() as conn:
            model = self._checked(conn, document)
            if key is not None and model.key != key:
                raise ValidationFailed("key", f"{model.key!r} differs from the model being "
                                              f"updated ({key!r}); keys never change")
            existing = conn.execute(sa.select(_m.c.id, _m.c.kind).where(
                _m.c.key == model.key)).first()
            if existing is not None and create_only:
                raise Conflict(f"score model {model.key!r} already exists; update it with "
                               "PUT (or `cadenza scores save`)")
            definition = model.to_json()
            if existing is None:
                model_id = conn.execute(sa.insert(_m).values(
                    key=model.key, name=model.name, kind=model.kind, definition=definition,
                    status="active", created_at=now, updated_at=now).returning(_m.c.id)
                ).scalar_one()
                created = True
            else:
                if existing.kind not in OWN_KINDS:
                    raise Conflict(f"score model {model.key!r} is a {existing.kind} model; "
                                   "choose another key")
                if existing.kind != model.kind:
                    self._refuse_if_used(conn, model.key, f"turned into a {model.kind} model")
                before = conn.execute(sa.select(_m.c.definition).where(
                    _m.c.id == existing.id)).scalar_one()
                if _event_rules_json(loads(before)) != _event_rules_json(definition):
                    q.reset_ledger(conn, existing.id)
                conn.execute(sa.update(_m).where(_m.c.id == existing.id).values(
                    name=model.name, kind=model.kind, definition=definition, status="active",
                    updated_at=now))
                model_id = existing.id
                created = False
            if isinstance(model, RulesModel):
                # The ledger holds every event the model scores: built from the whole log
                # now (a while on a big store), kept by the listener afterwards.
                q.catch_up_ledger(conn, model, model_id, now)
        return self.get(model.key), created

    def _refuse_if_used(self, conn: Connection, key: str, what: str) -> None:
        for stored in load_models(conn):
            model = stored.model
            if isinstance(model, MatrixModel) and key in (model.rows, model.columns):
                raise Conflict(f"score model {key!r} cannot be {what}: the matrix "
                               f"{model.key!r} uses it; archive the matrix first")

    def list_models(self, *, include_archived: bool = False) -> list[StoredModel]:
        """Every rules and matrix model, oldest first."""
        with self.store.read() as conn:
            found = load_models(conn, active_only=not include_archived)
        return sorted(found, key=lambda s: s.id)

    def get(self, key: str) -> StoredModel:
        """One model, active or archived."""
        with self.store.read() as conn:
            for stored in load_models(conn, active_only=False):
                if stored.key == key:
                    return stored
            row = conn.execute(sa.select(_m).where(_m.c.key == key)).mappings().first()
        if row is not None:
            # A matrix whose axis was archived: shown as stored, not resolved.
            return StoredModel(row["id"], parse_model(loads(row["definition"])), row["status"],
                               row["created_at"], row["updated_at"], row["scored_at"])
        raise NotFound("score model", key)

    def archive(self, key: str) -> StoredModel:
        """Stop scoring a model; its scores are removed (archived models keep no scores)."""
        stored = self.get(key)
        with self.store.begin() as conn:
            self._refuse_if_used(conn, key, "archived")
            conn.execute(sa.update(_m).where(_m.c.id == stored.id).values(
                status="archived", updated_at=self.clock.now_ms()))
            conn.execute(sa.delete(schema.contact_scores).where(
                schema.contact_scores.c.model_id == stored.id))
            q.reset_ledger(conn, stored.id)
        return self.get(key)

    # --- scoring -----------------------------------------------------------------------------

    def score_all(self, key: str | None = None,
                  progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
        """Score every live contact in one model (with the matrices built on it), or in
        every active model; one transaction per call."""
        now = self.clock.now_ms()
        started = time.perf_counter()
        with self.store.begin() as conn:
            models = load_models(conn)
            if key is not None:
                chosen = self._one_active(models, key)
                models = [s for s in models if s.key == key or (
                    isinstance(s.model, MatrixModel) and key in (s.model.rows,
                                                                s.model.columns))]
                if not models:
                    models = [chosen]
            outcomes = score_models(conn, models, now, progress=progress)
        seconds = round(time.perf_counter() - started, 3)
        return [{**dataclasses.asdict(o), "as_of": now, "seconds": seconds} for o in outcomes]

    def _one_active(self, models: Sequence[StoredModel], key: str) -> StoredModel:
        for stored in models:
            if stored.key == key:
                return stored
        stored = self.get(key)  # NotFound when unknown
        raise Conflict(f"score model {key!r} is {stored.status}; save it again to reactivate "
                       "it")

    # --- reading -----------------------------------------------------------------------------

    def top(self, key: str, limit: int = 20) -> list[dict[str, Any]]:
        """The highest-scored contacts of a model."""
        if not 1 <= limit <= MAX_TOP:
            raise ValidationFailed("limit", f"must be between 1 and {MAX_TOP}")
        stored = self.get(key)
        s, c = schema.contact_scores, schema.contacts
        with self.store.read() as conn:
            rows = conn.execute(
                sa.select(s.c.contact_id, c.c.email, s.c.score, s.c.grade, s.c.as_of)
                .join(c, c.c.id == s.c.contact_id).where(s.c.model_id == stored.id)
                .order_by(s.c.score.desc(), s.c.contact_id).limit(limit)).all()
        return [{"contact_id": r[0], "email": r[1], "score": r[2], "grade": r[3],
                 "as_of": r[4]} for r in rows]

    def distribution(self, key: str, buckets: int = 10) -> dict[str, Any]:
        """How scores spread: equal-width buckets between the lowest and highest score, and
        the count per grade."""
        if not 1 <= buckets <= MAX_BUCKETS:
            raise ValidationFailed("buckets", f"must be between 1 and {MAX_BUCKETS}")
        stored = self.get(key)
        mark_pg = self.store.engine.dialect.name == "postgresql"
        mark = "%s" if mark_pg else "?"
        with self.store.read() as conn:
            low, high, count = fetch(conn, "SELECT min(score), max(score), count(*) FROM "
                                           f"contact_scores WHERE model_id = {mark}",
                                     (stored.id,))[0]
            grades = fetch(conn, "SELECT grade, count(*) FROM contact_scores WHERE "
                                 f"model_id = {mark} GROUP BY grade", (stored.id,))
            histogram: list[dict[str, Any]] = []
            if count:
                width = (float(high) - float(low)) / buckets or 1.0
                rows = dict(fetch(conn, (
                    f"SELECT CAST(floor((score - {mark}) / {mark}) AS INTEGER) AS b, count(*) "
                    f"FROM contact_scores WHERE model_id = {mark} GROUP BY b"),
                    (float(low), width, stored.id)))
                for b in range(buckets):
                    n = rows.get(b, 0) + (rows.get(buckets, 0) if b == buckets - 1 else 0)
                    histogram.append({"from": round(float(low) + b * width, 4),
                                      "to": round(float(low) + (b + 1) * width, 4),
                                      "contacts": int(n)})
        order = {g: i for i, g in enumerate(_grade_order(stored.model))}
        return {"model": key, "contacts": int(count), "min": low, "max": high,
                "buckets": histogram,
                "grades": [{"grade": g, "contacts": int(n)} for g, n in
                           sorted(grades, key=lambda r: order.get(r[0], len(order)))]}

    def contact_scores(self, contact_id: int, key: str | None = None) -> dict[str, Any]:
        """One contact's score, grade and explanation in every model (or one): points per
        rule and what each rule matched."""
        now = self.clock.now_ms()
        with self.store.read() as conn:
            if conn.execute(sa.select(schema.contacts.c.id).where(
                    schema.contacts.c.id == contact_id)).first() is None:
                raise NotFound("contact", str(contact_id))
            models = load_models(conn)
            if key is not None:
                models = [self._one_active(models, key)]
            s = schema.contact_scores
            stored_rows = {r.model_id: r for r in conn.execute(sa.select(s).where(
                s.c.contact_id == contact_id))}
            result = []
            for stored in models:
                row = stored_rows.get(stored.id)
                result.append(_explain(conn, stored, row, contact_id, now, stored_rows,
                                       {m.key: m.id for m in models}))
        return {"contact_id": contact_id, "models": result}


def _event_rules_json(definition: Mapping[str, Any]) -> list[Any]:
    return [r for r in definition.get("rules", []) if "event" in r] + [
        definition.get("half_life")]


def _grade_order(model: ScoreModel) -> list[str]:
    if isinstance(model, RulesModel):
        return [g.grade for g in model.grades]
    return [a + b for a in model.row_grades for b in model.column_grades]


def _explain(conn: Connection, stored: StoredModel, row: Any, contact_id: int, now: int,
             rows: Mapping[int, Any], ids: Mapping[str, int]) -> dict[str, Any]:
    model = stored.model
    shape: dict[str, Any] = {"model": model.key, "kind": model.kind,
                             "score": None if row is None else row.score,
                             "grade": None if row is None else row.grade,
                             "as_of": None if row is None else row.as_of}
    if isinstance(model, MatrixModel):
        axes = {}
        for axis, axis_key in (("rows", model.rows), ("columns", model.columns)):
            axis_row = rows.get(ids.get(axis_key, -1))
            axes[axis] = {"model": axis_key,
                          "grade": None if axis_row is None else axis_row.grade,
                          "score": None if axis_row is None else axis_row.score}
        shape.update(axes)
        return shape
    points = dict(loads(row.explanation) or {}) if row is not None else {}
    facts = load_facts(conn, [contact_id], _needs(model), now).get(contact_id)
    counts = _event_counts(conn, model, contact_id)
    rules = []
    for rule in model.rules:
        item: dict[str, Any] = {"rule": rule.id, "points": points.get(rule.id, 0.0)}
        if isinstance(rule, AttributeRule):
            seen: dict[str, Any] = {}
            item["kind"] = "attribute"
            item["matched"] = bool(facts is not None and rule.when.evaluate(facts, seen))
            item["when"] = rule.when.to_json()
            item["seen"] = seen
            item["rule_points"] = rule.points
        else:
            n, first, last = counts.get(rule.id, (0, None, None))
            item.update({"kind": "event", "event": rule.event, "matched": n > 0,
                         "events": n, "first_at": first, "last_at": last,
                         "points_each": rule.points,
                         "raw_points": round(n * rule.points, 4)})
            if rule.cap:
                item["cap"] = rule.cap.to_json()
        rules.append(item)
    shape["rules"] = rules
    if model.half_life_ms:
        shape["half_life"] = model.to_json()["half_life"]
    return shape


def _needs(model: RulesModel) -> Any:
    from cadenza.segments import Needs

    needs = Needs()
    for rule in model.attribute_rules:
        needs = needs | rule.when.needs()
    return needs


def _event_counts(conn: Connection, model: RulesModel,
                  contact_id: int) -> dict[str, tuple[int, int | None, int | None]]:
    """Per event rule: how many of the contact's events it matches, first and last time."""
    rules = model.event_rules
    if not rules:
        return {}
    mark = "%s" if conn.dialect.name == "postgresql" else "?"
    found = {}
    for rule in rules:
        params: list[Any] = [rule.event]
        test = q._filter_sql(conn, rule, params)
        n, first, last = fetch(conn, f"SELECT count(*), min(e.timestamp), max(e.timestamp) "
                                     f"FROM events e WHERE e.name = {mark} AND {test} AND "
                                     f"e.contact_id = {mark}", (*params, contact_id))[0]
        found[rule.id] = (int(n), first, last)
    return found


def matching_rules(model: RulesModel, name: str, properties: Mapping[str, Any]
                   ) -> list[EventRule]:
    """The event rules of `model` an event scores (the same test as the SQL filter)."""
    from cadenza.segments.nodes import same

    hits = []
    for rule in model.event_rules:
        if rule.event != name:
            continue
        if all(any(same(_find(properties, path), v) for v in values)
               for path, values in rule.where):
            hits.append(rule)
    return hits


def _find(data: Any, path: str) -> Any:
    for part in path.split("."):
        if isinstance(data, Mapping):
            data = data.get(part)
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return None
    return data


LedgerRow = tuple[int, int, str, int, int, float, int]


def ledger_rows(models: Sequence[StoredModel], events: Sequence[tuple[int, int, str, Any, int]]
                ) -> list[LedgerRow]:
    """(model id, contact, rule, period, event id, points, at) for every (event, rule) it
    scores."""
    rows = []
    for stored in models:
        if not isinstance(stored.model, RulesModel) or not stored.model.event_rules:
            continue
        for eid, cid, name, props, at in events:
            for rule in matching_rules(stored.model, name, props):
                period = q.period_of(at, rule.cap.period_ms) if rule.cap else 0
                rows.append((stored.id, cid, rule.id, period, eid, rule.points, at))
    return rows


_LEDGER_KEY = ("model_id", "contact_id", "rule", "period", "event_id")


def write_ledger(conn: Connection, rows: Sequence[LedgerRow]) -> None:
    """Append ledger rows; a row already there (same model, contact, rule, event) is kept."""
    if rows:
        from cadenza.store import insert_rows

        insert_rows(conn, schema.score_ledger, (*_LEDGER_KEY, "points", "at"), rows,
                    ignore_conflicts_on=_LEDGER_KEY)


__all__ = ["ScoreService", "StoredModel", "ledger_rows", "load_models", "score_models",
           "write_ledger"]

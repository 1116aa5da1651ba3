"""Scores in SQL: one pipeline for every contact (`score_all`) and for a few (the listener).

A contact's score in a rules model is a pure function of its attributes, its events and `now`:

    score = clamp( sum of attribute rules that hold
                   + sum over event rules of  points x decay(age) x cap scale )

- decay(age) = 2 ** (-age / half_life) (1 without a half-life; an event stamped in the
  future counts as now);
- caps: the events of one rule in one period (UTC days, or weeks from Monday) are scaled
  down together so that the period's raw points reach at most the cap: each event keeps
  `min(1, cap / (n x |points|))` of its points, then decays from its own time. A model-wide
  cap scales the net event points of each of its periods the same way, after the rule caps;
- clamp: the floor and ceiling; the result is rounded to 2 decimals.

Event rules read the model's **ledger** (`score_ledger`, one row per (rule, event) it scores,
kept in (model, contact, rule, cap period, event) order) rather than the whole event log:
`catch_up_ledger` builds it from the log when the model is saved and appends what it has
not seen at every full round; the listener appends the events it reads. The unique key
drops repeats, so an event counts once however many times it is offered.

Both paths run the same statements; the listener only adds `contact_id IN (touched)`. That
is how the batch and incremental paths agree (tests/leads/test_scoring_agreement.py proves
it with random rules and event streams): there is one definition, not two.

The work happens in temporary tables: `score_ids` (the contacts in scope, for the
listener), `score_attr` (a bit per attribute rule that holds), `score_parts` (points per
contact and rule), `score_final` (the new score, grade and explanation per contact) and
`score_moved` (the contacts whose score or grade changed): `commit_scores` compares
score_final with `contact_scores` (threshold and grade events, change notices) and writes
the moved rows, one statement each.
"""

from __future__ import annotations

import hashlib
import importlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cadenza.errors import ValidationFailed
from cadenza.leads.models import (
    PERIOD_ORIGIN_MS,
    AttributeRule,
    EventRule,
    Grade,
    MatrixModel,
    RulesModel,
    ScoreModel,
    grade_of,
)
from cadenza.segments import Needs, load_facts
from cadenza.store import dumps, fetch, insert_rows, schema

THRESHOLD_EVENT = "Score Threshold Crossed"
GRADE_EVENT = "Grade Changed"
SCORE_EVENTS = (THRESHOLD_EVENT, GRADE_EVENT)
EVENT_SOURCE = "scoring"
NOTIFY = ("segments", "lifecycle")
"""Consumers told when a contact's score or grade changed."""
_FALLBACK_CHUNK = 2000

_metadata = sa.MetaData()
_ATTR = sa.Table("score_attr", _metadata, sa.Column("contact_id", sa.BigInteger),
                 sa.Column("mask", sa.BigInteger))
_MASK_BITS = 60
"""Attribute rules evaluated per pass over the contacts (a bit each in a BIGINT)."""


@dataclass(frozen=True)
class Outcome:
    """What one scoring round of one model did."""

    model: str
    scored: int
    """Contacts whose score row was written."""
    changed: int
    """Contacts whose score or grade differs from before."""
    events: int
    """Threshold and grade events appended to the event log."""


def _mark(conn: Connection) -> str:
    return "%s" if conn.dialect.name == "postgresql" else "?"


def _pg(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def _num(value: float) -> str:
    """A float literal both dialects read exactly (repr round-trips)."""
    return repr(float(value))


def _least(conn: Connection, *parts: str) -> str:
    return f"{'least' if _pg(conn) else 'min'}({', '.join(parts)})"


def _greatest(conn: Connection, *parts: str) -> str:
    return f"{'greatest' if _pg(conn) else 'max'}({', '.join(parts)})"


def _round(conn: Connection, expr: str, digits: int = 2) -> str:
    if _pg(conn):
        return f"CAST(round(CAST({expr} AS numeric), {digits}) AS double precision)"
    return f"round({expr}, {digits})"


# --- scope -----------------------------------------------------------------------------------

def prepare(conn: Connection, contact_ids: Iterable[int] | None) -> None:
    """Fresh temporary tables; with `contact_ids`, the scope is those contacts only."""
    postgres = _pg(conn)
    temp = "pg_temp" if postgres else "temp"
    suffix = " ON COMMIT DROP" if postgres else ""
    for name in ("score_ids", "score_parts", "score_final", "score_attr", "score_moved"):
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {temp}.{name}")
    json = "jsonb" if postgres else "TEXT"
    conn.exec_driver_sql(f"CREATE TEMPORARY TABLE score_ids (contact_id BIGINT PRIMARY KEY)"
                         f"{suffix}")
    conn.exec_driver_sql("CREATE TEMPORARY TABLE score_parts (contact_id BIGINT NOT NULL, "
                         f"rule VARCHAR(128) NOT NULL, points DOUBLE PRECISION NOT NULL)"
                         f"{suffix}")
    conn.exec_driver_sql(f"CREATE TEMPORARY TABLE score_moved (contact_id BIGINT PRIMARY KEY)"
                         f"{suffix}")
    conn.exec_driver_sql(f"CREATE TEMPORARY TABLE score_attr (contact_id BIGINT NOT NULL, "
                         f"mask BIGINT NOT NULL){suffix}")
    conn.exec_driver_sql("CREATE TEMPORARY TABLE score_final (contact_id BIGINT PRIMARY KEY, "
                         f"score DOUBLE PRECISION NOT NULL, grade VARCHAR(16), "
                         f"explanation {json} NOT NULL){suffix}")
    if contact_ids is not None:
        ids = sorted(set(contact_ids))
        if ids:
            conn.exec_driver_sql(f"INSERT INTO score_ids (contact_id) VALUES ({_mark(conn)})",
                                 [(i,) for i in ids])


def _scoped(column: str, scoped: bool) -> str:
    return f" AND {column} IN (SELECT contact_id FROM score_ids)" if scoped else ""


# --- event rules -----------------------------------------------------------------------------

def _json_path(conn: Connection, path: str) -> str:
    parts = path.split(".")
    if _pg(conn):
        return "'{" + ",".join(parts) + "}'"
    return "'$" + "".join(f"[{p}]" if p.isdigit() else f'."{p}"' for p in parts) + "'"


def _filter_sql(conn: Connection, rule: EventRule, params: list[Any]) -> str:
    """The rule's property filter over `e.properties`, same JSON type required (a string
    "1" is not the number 1, true is not 1)."""
    mark = _mark(conn)
    tests = []
    for path, values in rule.where:
        json_path = _json_path(conn, path)
        options = []
        for value in values:
            if _pg(conn):
                options.append(f"e.properties #> {json_path} = CAST({mark} AS jsonb)")
                params.append(dumps(value))
            elif isinstance(value, bool):
                options.append(f"json_type(e.properties, {json_path}) = "
                               f"'{'true' if value else 'false'}'")
            elif isinstance(value, str):
                options.append(f"(json_type(e.properties, {json_path}) = 'text' AND "
                               f"json_extract(e.properties, {json_path}) = {mark})")
                params.append(value)
            else:
                options.append(f"(json_type(e.properties, {json_path}) IN ('integer', 'real') "
                               f"AND json_extract(e.properties, {json_path}) = {mark})")
                params.append(value)
        tests.append("(" + " OR ".join(options) + ")")
    return " AND ".join(tests) if tests else "1 = 1"


LEDGER_MARK = "score-ledger:{}"
"""`engine_cursors` row holding the last event id a model's ledger was caught up to."""


def _matches_sql(conn: Connection, rules: Sequence[EventRule], params: list[Any],
                 low: int, top: int) -> str:
    """(contact_id, rule, period, event_id, points, at) of every (event, rule it scores) among the
    events with ids in (low, top]: one pass over that range of the log (an event may score
    several stacked rules)."""
    mark = _mark(conn)
    table = " UNION ALL ".join(
        f"SELECT {k} AS k, '{rule.id}' AS rule, {_num(rule.points)} AS points, "
        f"{rule.cap.period_ms if rule.cap else 0} AS period_ms, {mark} AS event"
        for k, rule in enumerate(rules))
    params += [rule.event for rule in rules]
    names = sorted({rule.event for rule in rules})
    params += names
    tests = []
    for k, rule in enumerate(rules):
        if rule.where:
            tests.append(f"WHEN {k} THEN {_filter_sql(conn, rule, params)}")
    test = f"CASE r.k {' '.join(tests)} ELSE 1 = 1 END" if tests else "1 = 1"
    # `+e.name` keeps SQLite on the id range rather than the (name, timestamp) index, whose
    # rows would each cost a random read of the event.
    name = "e.name" if _pg(conn) else "+e.name"
    # Rule ids are slugs (checked when the model is parsed): safe as literals.
    period = (f"CASE WHEN r.period_ms = 0 THEN 0 ELSE (e.timestamp - {PERIOD_ORIGIN_MS}) / "
              "r.period_ms END")
    return (f"SELECT e.contact_id, r.rule, {period}, e.id, r.points, e.timestamp FROM events e "
            f"CROSS JOIN ({table}) r WHERE e.id > {int(low)} AND e.id <= {int(top)} AND "
            f"{name} IN ({', '.join([mark] * len(names))}) AND r.event = e.name AND {test}")


def catch_up_ledger(conn: Connection, model: RulesModel, model_id: int, now: int) -> int:
    """Append to `score_ledger` the model's matches among events it has not seen yet (all
    of them the first time); rows the listener already wrote are kept. Returns rows added."""
    rules = model.event_rules
    if not rules:
        return 0
    from cadenza.store import cursors as store_cursors

    mark = _mark(conn)
    name = LEDGER_MARK.format(model_id)
    found = fetch(conn, f"SELECT position FROM engine_cursors WHERE name = {mark}", (name,))
    low = int(found[0][0]) if found else 0
    top = store_cursors.log_end(conn)
    added = 0
    if top > low:
        params: list[Any] = []
        matches = _matches_sql(conn, rules, params, low, top)
        added = conn.exec_driver_sql(
            f"INSERT INTO score_ledger (model_id, contact_id, rule, period, event_id, points, "
            f"at) SELECT {int(model_id)}, m.* FROM ({matches}) m WHERE true "
            "ON CONFLICT (model_id, contact_id, rule, period, event_id) DO NOTHING",
            tuple(params)).rowcount
    insert_rows(conn, schema.engine_cursors, ("name", "position", "updated_at"),
                [(name, top, now)], upsert_on=("name",), update=("position", "updated_at"))
    return int(added)


def reset_ledger(conn: Connection, model_id: int) -> None:
    """Forget a model's ledger (its event rules changed): the next catch-up rebuilds it."""
    mark = _mark(conn)
    conn.exec_driver_sql(f"DELETE FROM score_ledger WHERE model_id = {mark}", (model_id,))
    conn.exec_driver_sql(f"DELETE FROM engine_cursors WHERE name = {mark}",
                         (LEDGER_MARK.format(model_id),))


def _event_parts(conn: Connection, model: RulesModel, model_id: int, now: int,
                 scoped: bool) -> None:
    """Points per (contact, event rule) into score_parts, from the model's ledger rows (one
    per scored event): decayed, capped per rule and period, capped per model and period."""
    rules = model.event_rules
    if not rules:
        return
    mark = _mark(conn)
    matches = (f"SELECT contact_id, rule AS r, points AS p, "
               f"period AS rb, {_model_period(model)} AS mb, {_decay(conn, model, now)} AS d "
               f"FROM score_ledger l WHERE model_id = {mark}"
               f"{_scoped('l.contact_id', scoped)}")
    params: list[Any] = [model_id]
    if not any(r.cap for r in rules) and model.cap is None:
        sql = f"SELECT contact_id, r, sum(p * d) FROM ({matches}) m GROUP BY contact_id, r"
    else:
        # Rule caps: the events of a (rule, period) keep min(1, cap / (n x |points|)) of
        # their points; `allowed` is cap / |points|, the number of full-value events.
        allowed = "CASE r " + " ".join(
            f"WHEN '{rule.id}' THEN {_num(rule.cap.points / abs(rule.points))}"
            for rule in rules if rule.cap) + " ELSE NULL END" if any(
            r.cap for r in rules) else "NULL"
        # Without a model cap a group is a whole (rule, period): its own count is the
        # period's; with one, a rule's period may span several model periods, so a window
        # adds the counts up.
        total = "sum(n) OVER (PARTITION BY contact_id, r, rb)" if model.cap else "n"
        per_period = f"{allowed} / {total}"
        scale = f"CASE WHEN {allowed} IS NULL THEN 1.0 ELSE {_least(conn, '1.0', per_period)} END"
        # Without a model cap, the groups follow the ledger's key (model, contact, rule,
        # period): SQLite streams them instead of sorting millions of rows.
        keys = "contact_id, r, rb" + (", mb" if model.cap else "")
        levels = (f"SELECT contact_id, r, rb, {'mb' if model.cap else '0 AS mb'}, "
                  "max(p) AS p, count(*) AS n, sum(d) AS d "
                  f"FROM ({matches}) m GROUP BY {keys}")
        scaled = (f"SELECT contact_id, r, mb, p * n * {scale} AS raw, p * d * {scale} AS v "
                  f"FROM ({levels}) g")
        if model.cap is None:
            sql = f"SELECT contact_id, r, sum(v) FROM ({scaled}) s GROUP BY contact_id, r"
        else:
            net = "sum(raw) OVER (PARTITION BY contact_id, mb)"
            model_scale = (f"CASE WHEN {net} = 0 THEN 1.0 ELSE "
                           f"{_least(conn, '1.0', f'{_num(model.cap.points)} / abs({net})')} END")
            sql = (f"SELECT contact_id, r, sum(w) FROM (SELECT contact_id, r, "
                   f"v * {model_scale} AS w FROM ({scaled}) s) t GROUP BY contact_id, r")
    conn.exec_driver_sql(f"INSERT INTO score_parts (contact_id, rule, points) {sql}",
                         tuple(params))


def _model_period(model: RulesModel) -> str:
    """The model cap's period of `l.at` (0 without a model cap)."""
    if model.cap is None:
        return "0"
    return f"(l.at - {PERIOD_ORIGIN_MS}) / {model.cap.period_ms}"


def period_of(at: int, period_ms: int) -> int:
    """The period number of `at` as SQL computes it (integer division truncates)."""
    offset = at - PERIOD_ORIGIN_MS
    return offset // period_ms if offset >= 0 else -((-offset) // period_ms)


def _decay(conn: Connection, model: RulesModel, now: int) -> str:
    if not model.half_life_ms:
        return "1.0"
    rate = math.log(2) / model.half_life_ms
    return f"exp({_least(conn, f'l.at - {int(now)}', '0')} * {_num(rate)})"


# --- attribute rules -------------------------------------------------------------------------

def _attribute_parts(conn: Connection, model: RulesModel, now: int, scoped: bool) -> None:
    """Points per (contact, attribute rule) into score_parts: the condition compiled to SQL
    (`cadenza.segments.sql`), or evaluated in Python over batches when it cannot be."""
    rules = model.attribute_rules
    if not rules:
        return
    compiled = _compile(conn, rules, now)
    in_sql = [(rule, c) for rule, c in zip(rules, compiled, strict=True) if c is not None]
    contacts = schema.contacts
    mark = _mark(conn)
    for start in range(0, len(in_sql), _MASK_BITS):
        chunk = in_sql[start:start + _MASK_BITS]
        # One pass over the contacts per 60 rules: a bit per rule that holds, then one cheap
        # statement per rule over the (narrow) matches.
        mask = sum((sa.case((condition, 1 << i), else_=0) for i, (_, condition) in
                    enumerate(chunk)), start=sa.literal(0))
        query = sa.select(contacts.c.id.label("id"), mask.label("mask")).where(
            contacts.c.merged_into.is_(None))
        if scoped:
            query = query.where(contacts.c.id.in_(
                sa.select(sa.column("contact_id")).select_from(sa.table("score_ids"))))
        inner = query.subquery()
        conn.execute(sa.insert(_ATTR).from_select(
            ["contact_id", "mask"], sa.select(inner.c.id, inner.c.mask).where(inner.c.mask != 0)))
        for i, (rule, _) in enumerate(chunk):
            conn.exec_driver_sql(
                f"INSERT INTO score_parts (contact_id, rule, points) SELECT contact_id, "
                f"{mark}, {mark} FROM score_attr WHERE (mask & {1 << i}) <> 0",
                (rule.id, rule.points))
        conn.exec_driver_sql("DELETE FROM score_attr")
    python_rules = [rule for rule, c in zip(rules, compiled, strict=True) if c is None]
    if python_rules:
        _attribute_parts_python(conn, python_rules, now, scoped)


def _compile(conn: Connection, rules: Sequence[AttributeRule], now: int) -> list[Any]:
    try:
        segment_sql = importlib.import_module("cadenza.segments.sql")
    except ImportError:  # no SQL compiler for conditions: evaluate them in Python
        return [None] * len(rules)
    compiled: list[Any] = []
    for rule in rules:
        try:
            compiled.append(segment_sql.condition_sql(rule.when, conn.dialect.name, now))
        except (NotImplementedError, ValidationFailed):  # Python can still evaluate it
            compiled.append(None)
    return compiled


def _attribute_parts_python(conn: Connection, rules: Sequence[AttributeRule], now: int,
                            scoped: bool) -> None:
    where = "merged_into IS NULL" + _scoped("id", scoped)
    ids = [int(r[0]) for r in fetch(conn, f"SELECT id FROM contacts WHERE {where} ORDER BY id")]
    needs = Needs()
    for rule in rules:
        needs = needs | rule.when.needs()
    mark = _mark(conn)
    for start in range(0, len(ids), _FALLBACK_CHUNK):
        facts = load_facts(conn, ids[start: start + _FALLBACK_CHUNK], needs, now)
        rows = [(cid, rule.id, rule.points) for cid, fact in facts.items() for rule in rules
                if rule.when.evaluate(fact)]
        if rows:
            conn.exec_driver_sql(f"INSERT INTO score_parts (contact_id, rule, points) "
                                 f"VALUES ({mark}, {mark}, {mark})", rows)


# --- totals, grades, commit ------------------------------------------------------------------

def _grade_sql(conn: Connection, grades: Sequence[Grade], expr: str) -> tuple[str, list[Any]]:
    if not grades:
        return "NULL", []
    mark = _mark(conn)
    branches = []
    params: list[Any] = []
    for band in grades:
        if band.min is None:
            branches.append(f"ELSE {mark}")
        else:
            branches.append(f"WHEN {expr} >= {_num(band.min)} THEN {mark}")
        params.append(band.grade)
    if grades[-1].min is not None:
        branches.append("ELSE NULL")
    return f"CASE {' '.join(branches)} END", params


def rules_final(conn: Connection, model: RulesModel, model_id: int, now: int,
                scoped: bool) -> None:
    """score_final for a rules model: parts, then one row per live contact in scope."""
    _event_parts(conn, model, model_id, now, scoped)
    _attribute_parts(conn, model, now, scoped)
    total = "coalesce(p.total, 0.0)"
    if model.floor is not None:
        total = _greatest(conn, total, _num(model.floor))
    if model.ceiling is not None:
        total = _least(conn, total, _num(model.ceiling))
    agg = ("jsonb_object_agg(rule, CAST(round(CAST(points AS numeric), 2) AS double "
           "precision))" if _pg(conn) else "json_group_object(rule, round(points, 2))")
    empty = "CAST('{}' AS jsonb)" if _pg(conn) else "'{}'"
    grade, params = _grade_sql(conn, model.grades, "s")
    conn.exec_driver_sql(
        f"INSERT INTO score_final (contact_id, score, grade, explanation) "
        f"SELECT id, s, {grade}, ex FROM (SELECT c.id AS id, {_round(conn, total)} AS s, "
        f"coalesce(p.ex, {empty}) AS ex FROM contacts c LEFT JOIN (SELECT contact_id, "
        f"sum(points) AS total, {agg} AS ex FROM score_parts GROUP BY contact_id) p "
        f"ON p.contact_id = c.id WHERE c.merged_into IS NULL{_scoped('c.id', scoped)}) f",
        tuple(params))


def matrix_final(conn: Connection, model: MatrixModel, row_id: int, column_id: int,
                 scoped: bool) -> None:
    """score_final for a matrix: contacts graded by both models; the score orders the cells
    (100 x row rank + column rank, best cell highest)."""
    mark = _mark(conn)
    params: list[Any] = []

    def rank(column: str, grades: Sequence[str]) -> str:
        params.extend(grades)
        whens = " ".join(f"WHEN {mark} THEN {len(grades) - i}" for i in range(len(grades)))
        return f"CASE {column} {whens} ELSE 0 END"

    score = f"100 * {rank('a.grade', model.row_grades)} + {rank('b.grade', model.column_grades)}"
    empty = "CAST('{}' AS jsonb)" if _pg(conn) else "'{}'"
    conn.exec_driver_sql(
        f"INSERT INTO score_final (contact_id, score, grade, explanation) "
        f"SELECT a.contact_id, {score}, a.grade || b.grade, {empty} FROM contact_scores a "
        f"JOIN contact_scores b ON b.contact_id = a.contact_id AND b.model_id = {mark} "
        f"JOIN contacts c ON c.id = a.contact_id AND c.merged_into IS NULL "
        f"WHERE a.model_id = {mark} AND a.grade IS NOT NULL AND b.grade IS NOT NULL"
        f"{_scoped('a.contact_id', scoped)}",
        (*params, column_id, row_id))


def baseline(model: ScoreModel) -> tuple[float, str | None]:
    """What an unscored contact counts as when crossings are detected: score 0 (within the
    bounds) and its grade."""
    if isinstance(model, MatrixModel):
        return 0.0, None
    zero = 0.0
    if model.floor is not None:
        zero = max(zero, model.floor)
    if model.ceiling is not None:
        zero = min(zero, model.ceiling)
    return zero, grade_of(model.grades, zero)


def commit_scores(conn: Connection, model: ScoreModel, model_id: int, now: int,
                  scoped: bool, notify: bool = True) -> Outcome:
    """Compare score_final with contact_scores (events, change notices), then write it."""
    mark = _mark(conn)
    zero, zero_grade = baseline(model)
    old_score = f"CASE WHEN o.contact_id IS NULL THEN {_num(zero)} ELSE o.score END"
    old_grade = f"CASE WHEN o.contact_id IS NULL THEN {mark} ELSE o.grade END"
    differs = "IS DISTINCT FROM" if _pg(conn) else "IS NOT"
    join = (f"FROM score_final f LEFT JOIN contact_scores o ON o.model_id = {mark} "
            "AND o.contact_id = f.contact_id")
    events = 0
    if model.thresholds or model.grade_events:
        crossings = []
        for t in model.thresholds:
            crossings.append(f"({old_score} < {_num(t)} AND f.score >= {_num(t)})")
            crossings.append(f"({old_score} >= {_num(t)} AND f.score < {_num(t)})")
        if model.grade_events:
            crossings.append(f"(f.grade {differs} {old_grade})")
        rows = fetch(conn, f"SELECT f.contact_id, {old_score}, f.score, {old_grade}, f.grade "
                           f"{join} WHERE {' OR '.join(crossings)}",
                     (zero_grade, model_id, *([zero_grade] if model.grade_events else [])))
        events = _emit(conn, model, rows, now)
    # Only rows whose score or grade moved are written (and announced): a round that
    # changes nothing writes nothing, and `as_of` is when the score last changed.
    moved = f"o.contact_id IS NULL OR o.score <> f.score OR o.grade {differs} f.grade"
    changed = conn.exec_driver_sql(f"INSERT INTO score_moved (contact_id) SELECT f.contact_id "
                                   f"{join} WHERE {moved}", (model_id,)).rowcount
    if notify:
        # Queue them for segments and lifecycle (what `mark_changed` does, as one
        # INSERT ... SELECT: a full round may move every score).
        consumers = " UNION ALL ".join(f"SELECT '{c}' AS consumer" for c in NOTIFY)
        part = (f"mod(m.contact_id, {schema.PARTITIONS})" if _pg(conn)
                else f"m.contact_id % {schema.PARTITIONS}")  # '%' is psycopg's placeholder
        conn.exec_driver_sql(
            f"INSERT INTO contact_changes (consumer, contact_id, part, at) "
            f"SELECT n.consumer, m.contact_id, {part}, {mark} "
            f"FROM score_moved m CROSS JOIN ({consumers}) n WHERE true "
            "ON CONFLICT (consumer, contact_id) DO NOTHING", (now,))
    json_mark = "CAST(f.explanation AS jsonb)" if _pg(conn) else "f.explanation"
    conn.exec_driver_sql(
        f"INSERT INTO contact_scores (model_id, contact_id, score, grade, explanation, as_of) "
        f"SELECT {mark}, f.contact_id, f.score, f.grade, {json_mark}, {mark} "
        f"FROM score_moved m JOIN score_final f ON f.contact_id = m.contact_id WHERE true "
        "ON CONFLICT (model_id, contact_id) DO UPDATE SET score = excluded.score, "
        "grade = excluded.grade, explanation = excluded.explanation, as_of = excluded.as_of",
        (model_id, now))
    written = int(fetch(conn, "SELECT count(*) FROM score_final")[0][0])
    # Contacts in scope without a row any more (merged away, or no longer graded in a matrix).
    scope = ("contact_id IN (SELECT contact_id FROM score_ids) AND " if scoped else "")
    conn.exec_driver_sql(
        f"DELETE FROM contact_scores WHERE model_id = {mark} AND {scope}"
        "NOT EXISTS (SELECT 1 FROM score_final f WHERE f.contact_id = contact_scores.contact_id)",
        (model_id,))
    for name in ("score_parts", "score_final", "score_moved"):
        conn.exec_driver_sql(f"DELETE FROM {name}")
    return Outcome(model.key, int(written), changed, events)


def _emit(conn: Connection, model: ScoreModel, rows: Sequence[tuple[Any, ...]],
          now: int) -> int:
    """Threshold and grade events for the crossings found, with message ids derived from
    (model, contact, what, now): a repeat of the same round adds nothing."""
    from cadenza.events import lock_event_log

    found: list[tuple[str, int, str, dict[str, Any]]] = []
    for cid, old, new, old_grade, new_grade in rows:
        for t in model.thresholds:
            direction = ("up" if old < t <= new else "down" if new < t <= old else None)
            if direction:
                found.append((_message_id(model.key, cid, f"t:{t}:{direction}", now), cid,
                              THRESHOLD_EVENT,
                              {"model": model.key, "threshold": t, "direction": direction,
                               "score": new, "previous_score": old}))
        if model.grade_events and old_grade != new_grade:
            found.append((_message_id(model.key, cid, f"g:{old_grade}:{new_grade}", now), cid,
                          GRADE_EVENT,
                          {"model": model.key, "from": old_grade, "to": new_grade,
                           "score": new}))
    if not found:
        return 0
    lock_event_log(conn)  # event ids must commit in order for the readers' cursors
    return insert_rows(conn, schema.events, (
        "message_id", "contact_id", "type", "name", "properties", "context", "source",
        "timestamp", "received_at"), [
        (mid, cid, "track", name, dumps(props), "{}", EVENT_SOURCE, now, now)
        for mid, cid, name, props in found], ignore_conflicts_on=("message_id",))


def _message_id(model: str, contact_id: int, what: str, now: int) -> str:
    digest = hashlib.sha256(f"{model}\x00{contact_id}\x00{what}\x00{now}".encode())
    return f"score:{digest.hexdigest()[:40]}"

"""Journey statistics and a contact's journey history, read from the engine's tables."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection

from cadenza.errors import NotFound
from cadenza.store import loads


def journey_stats(conn: Connection, key: str) -> dict[str, Any]:
    """Per version (live and shadow apart): each step's entered, left and waiting counts,
    each edge's count, conversions per goal, and enrollments by status."""
    row = conn.exec_driver_sql("SELECT id FROM journeys WHERE key = " + _mark(conn),
                               (key,)).first()
    if row is None:
        raise NotFound("journey", key)
    jid = row[0]
    versions: dict[tuple[int, bool], dict[str, Any]] = {}

    def version(vid: int, shadow: bool) -> dict[str, Any]:
        return versions.setdefault((vid, bool(shadow)), {
            "version_id": vid, "shadow": bool(shadow), "steps": {}, "edges": [],
            "conversions": {}, "enrollments": {}})

    m = _mark(conn)
    for vid, shadow, node, entered, departed in conn.exec_driver_sql(
            "SELECT s.version_id, s.shadow, s.node, s.entered, s.departed FROM "
            "journey_step_stats s JOIN journey_versions v ON v.id = s.version_id "
            f"WHERE v.journey_id = {m} ORDER BY s.node", (jid,)):
        version(vid, shadow)["steps"][node] = {
            "entered": int(entered), "left": int(departed),
            "here": int(entered) - int(departed)}
    for vid, shadow, source, target, count in conn.exec_driver_sql(
            "SELECT e.version_id, e.shadow, e.source, e.target, e.count FROM "
            "journey_edge_stats e JOIN journey_versions v ON v.id = e.version_id "
            f"WHERE v.journey_id = {m} ORDER BY e.source, e.target", (jid,)):
        version(vid, shadow)["edges"].append({"from": source, "to": target,
                                              "count": int(count)})
    for vid, shadow, goal, count in conn.exec_driver_sql(
            "SELECT version_id, shadow, goal, count(*) FROM conversions "
            f"WHERE journey_id = {m} GROUP BY version_id, shadow, goal", (jid,)):
        version(vid, shadow)["conversions"][goal] = int(count)
    for vid, shadow, status, count in conn.exec_driver_sql(
            "SELECT version_id, shadow, status, count(*) FROM enrollments "
            f"WHERE journey_id = {m} GROUP BY version_id, shadow, status", (jid,)):
        version(vid, shadow)["enrollments"][status] = int(count)
    numbers: dict[int, int] = {}
    order: dict[int, list[str]] = {}
    for vid, number, definition in conn.exec_driver_sql(
            f"SELECT id, number, definition FROM journey_versions WHERE journey_id = {m}",
            (jid,)):
        numbers[int(vid)] = int(number)
        steps = (loads(definition) or {}).get("steps") or []
        order[int(vid)] = [str(s.get("id")) for s in steps if isinstance(s, dict)]
    out = []
    for (vid, _shadow), data in sorted(versions.items()):
        data["number"] = numbers.get(vid)
        # Steps in the journey's own order (as written), not alphabetically.
        rank = {step: n for n, step in enumerate(order.get(vid, []))}
        data["steps"] = dict(sorted(data["steps"].items(),
                                    key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))
        out.append(data)
    return {"journey": key, "versions": out}


def contact_journeys(conn: Connection, contact_id: int, limit: int = 50) -> list[dict[str, Any]]:
    """A contact's enrollments, newest first, each with every pass it went through: the
    steps, their outcomes and the values each decision saw."""
    m = _mark(conn)
    rows = conn.exec_driver_sql(
        "SELECT e.id, j.key, v.number, e.shadow, e.node, e.status, e.wake_at, e.entered_at, "
        "e.ended_at, e.outcome FROM enrollments e JOIN journeys j ON j.id = e.journey_id "
        "JOIN journey_versions v ON v.id = e.version_id "
        f"WHERE e.contact_id = {m} ORDER BY e.id DESC LIMIT {int(limit)}",
        (contact_id,)).all()
    out: list[dict[str, Any]] = []
    for eid, key, number, shadow, node, status, wake_at, entered, ended, outcome in rows:
        history = [
            {"at": int(at), "cause": cause, "steps": [
                {"step": s[0], "outcome": s[1], **({"details": s[2]} if len(s) > 2 else {})}
                for s in loads(steps)]}
            for at, cause, steps in conn.exec_driver_sql(
                "SELECT at, cause, steps FROM journey_history "
                f"WHERE enrollment_id = {m} ORDER BY seq", (eid,))]
        out.append({"enrollment_id": eid, "journey": key, "version": number,
                    "shadow": bool(shadow), "step": node, "status": status,
                    "wake_at": wake_at, "entered_at": entered, "ended_at": ended,
                    "outcome": outcome, "history": history})
    return out


def _mark(conn: Connection) -> str:
    return "%s" if conn.dialect.name == "postgresql" else "?"


def shadow_report(conn: Connection, key: str) -> dict[str, Any]:
    """The shadow version against the live one, over the same entries: since the shadow's
    first entry, how many entered each, where they are, how they ended, the messages each
    step would send (shadow) or sent (live), and conversions — with rates per entry."""
    m = _mark(conn)
    row = conn.exec_driver_sql(
        f"SELECT id, live_version_id, shadow_version_id FROM journeys WHERE key = {m}",
        (key,)).first()
    if row is None:
        raise NotFound("journey", key)
    jid, live, shadow = row
    if shadow is None:
        raise NotFound("shadow version of journey", key)
    since = conn.exec_driver_sql(
        f"SELECT min(entered_at) FROM enrollments WHERE journey_id = {m} AND version_id = {m}",
        (jid, shadow)).scalar()
    sides: dict[str, dict[str, Any]] = {}
    for name, vid, is_shadow in (("live", live, False), ("shadow", shadow, True)):
        side: dict[str, Any] = {"version_id": vid, "entered": 0, "outcomes": {}, "at_step": {},
                                "messages": {}, "conversions": {}}
        if since is not None and vid is not None:
            scope = (f"FROM enrollments e WHERE e.journey_id = {m} AND e.version_id = {m} "
                     f"AND e.shadow = {m} AND e.entered_at >= {m}")
            args = (jid, vid, is_shadow, since)
            for status, node, outcome, count in conn.exec_driver_sql(
                    f"SELECT e.status, e.node, e.outcome, count(*) {scope} "
                    "GROUP BY e.status, e.node, e.outcome", args):
                side["entered"] += int(count)
                if status in ("ready", "waiting"):
                    side["at_step"][node] = side["at_step"].get(node, 0) + int(count)
                else:
                    side["outcomes"][outcome] = side["outcomes"].get(outcome, 0) + int(count)
            for node, count in conn.exec_driver_sql(
                    f"SELECT o.node, count(*) FROM outbox o WHERE o.enrollment_id IN "
                    f"(SELECT e.id {scope}) GROUP BY o.node", args):
                side["messages"][node] = int(count)
            for goal, count in conn.exec_driver_sql(
                    f"SELECT c.goal, count(*) FROM conversions c WHERE c.enrollment_id IN "
                    f"(SELECT e.id {scope}) GROUP BY c.goal", args):
                side["conversions"][goal] = int(count)
        sides[name] = side
    return {"journey": key, "since": since, **sides,
            "compare": {kind: _compare(sides["live"], sides["shadow"], kind)
                        for kind in ("messages", "conversions", "outcomes")}}


def _compare(live: dict[str, Any], shadow: dict[str, Any], kind: str) -> dict[str, Any]:
    """Per name: both counts and both rates per entry."""
    out = {}
    for name in sorted(set(live[kind]) | set(shadow[kind]), key=str):
        a, b = live[kind].get(name, 0), shadow[kind].get(name, 0)
        out[str(name)] = {"live": a, "shadow": b,
                          "live_rate": round(a / live["entered"], 4) if live["entered"] else None,
                          "shadow_rate": round(b / shadow["entered"], 4)
                          if shadow["entered"] else None}
    return out

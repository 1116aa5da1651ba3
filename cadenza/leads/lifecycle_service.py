"""Lifecycle use cases for the API and the CLI: stages, a contact's stage and history, manual
moves, and (re)applying the rules to every contact."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cadenza.clock import Clock
from cadenza.errors import Conflict, NotFound, ValidationFailed
from cadenza.leads.lifecycle import evaluate_contacts, stage_router
from cadenza.leads.lifecycle_moves import Move, apply_moves, current_stages, live_contacts
from cadenza.leads.lifecycle_stages import (
    KEY,
    StageConfig,
    condition_refs,
    declared_fields,
    load_config,
    parse_config,
    save_config,
    stage_population,
)
from cadenza.leads.routing_assign import RoutingOptions
from cadenza.leads.routing_rules import load_rules
from cadenza.store import Store, schema

MAX_MANUAL = 10_000
"""Contacts one manual move may name."""
Progress = Callable[[int, int], None]
"""Called with (contacts done, contacts in all)."""


def _stage_users(conn: Connection, config: StageConfig) -> dict[str, list[str]]:
    """For each stage key, what names it in a condition (stage rules, routing rules)."""
    users: dict[str, list[str]] = {}
    for stage, rule in config.rules():
        for key in condition_refs(rule.condition.to_json())[1]:
            users.setdefault(key, []).append(f"stage {stage.key!r} rule {rule.name!r}")
    for routing in load_rules(conn):
        if routing.condition is not None:
            for key in condition_refs(routing.condition.to_json())[1]:
                users.setdefault(key, []).append(f"routing rule {routing.key!r}")
    return users


class LifecycleService:
    """Stages and contacts' stages."""

    def __init__(self, store: Store, clock: Clock, options: RoutingOptions | None = None) -> None:
        self.store = store
        self.clock = clock
        self.router = stage_router(options or RoutingOptions())

    def stages(self) -> dict[str, Any]:
        """The stages in order, with the contacts in each."""
        with self.store.read() as conn:
            config = load_config(conn)
            counts = stage_population(conn)
        out = config.to_dict()
        for item in out["stages"]:
            item["contacts"] = counts.get(item["key"], 0)
        return out

    def set_stages(self, document: Any) -> StageConfig:
        """Replace the stages (add, rename, reorder, remove unused); refused when a removed
        stage still holds contacts or a condition names it."""
        now = self.clock.now_ms()

        def work(conn: Connection) -> StageConfig:
            config = parse_config(document, declared_fields(conn))
            keep = set(config.keys())
            counts = stage_population(conn)
            for key, held in sorted(counts.items()):
                if key not in keep and held:
                    raise Conflict(f"stage {key!r} holds {held} contact(s); move them to "
                                   "another stage before removing it")
            for key, users in sorted(_stage_users(conn, config).items()):
                if key not in keep:
                    raise Conflict(f"stage {key!r} is named by {users[0]}; change it first")
            save_config(conn, config, now)
            return config

        return self.store.retry(work)

    def rename(self, old: str, new: str) -> StageConfig:
        """Change a stage's key, moving its contacts with it (history keeps the old key)."""
        if not KEY.match(new):
            raise ValidationFailed("new", "must be a slug: a lowercase letter, then letters, "
                                   "digits, '_' or '-'")
        now = self.clock.now_ms()

        def work(conn: Connection) -> StageConfig:
            config = load_config(conn)
            config.require(old, "old")
            if config.get(new) is not None:
                raise Conflict(f"stage {new!r} exists already")
            users = _stage_users(conn, config).get(old)
            if users:
                raise Conflict(f"stage {old!r} is named by {users[0]}; change it first")
            document = config.to_dict()
            for item in document["stages"]:
                if item["key"] == old:
                    item["key"] = new
                item.pop("position", None)
            document.pop("stored", None)
            renamed = parse_config(document)
            save_config(conn, renamed, now)
            c = schema.contact_stages
            conn.execute(sa.update(c).where(c.c.stage == old).values(stage=new))
            return renamed

        return self.store.retry(work)

    def contact(self, contact_id: int, history_limit: int = 100) -> dict[str, Any]:
        """A contact's stage, since when, and its stage history (newest first)."""
        h = schema.stage_history
        with self.store.read() as conn:
            if not live_contacts(conn, [contact_id]):
                raise NotFound("contact", contact_id)
            c = schema.contact_stages
            row = conn.execute(sa.select(c.c.stage, c.c.since)
                               .where(c.c.contact_id == contact_id)).first()
            history = [dict(r) for r in conn.execute(
                sa.select(h.c.id, h.c.from_stage, h.c.to_stage, h.c.cause, h.c.detail, h.c.at)
                .where(h.c.contact_id == contact_id).order_by(h.c.at.desc(), h.c.id.desc())
                .limit(history_limit)).mappings()]
        return {"contact_id": contact_id, "stage": row.stage if row else None,
                "since": row.since if row else None, "history": history}

    def set_stage(self, contact_ids: Sequence[int], stage: str, reason: str,
                  cause: str = "api") -> list[Move]:
        """Move contacts to `stage` by hand (any direction), with a reason."""
        if not isinstance(reason, str) or not reason.strip() or len(reason) > 1000:
            raise ValidationFailed("reason", "is required: say why (1 to 1000 characters)")
        ids = sorted(set(contact_ids))
        if not ids or len(ids) > MAX_MANUAL:
            raise ValidationFailed("contact_ids", f"must name 1 to {MAX_MANUAL} contacts")
        now = self.clock.now_ms()

        def work(conn: Connection) -> list[Move]:
            config = load_config(conn)
            config.require(stage)
            live = live_contacts(conn, ids)
            missing = sorted(set(ids) - set(live))
            if missing:
                raise NotFound("contact", missing[0])
            current = current_stages(conn, live)
            moves = [Move(cid, current.get(cid), stage, cause, None,
                          {"reason": reason.strip()}) for cid in live]
            return apply_moves(conn, config, moves, now, self.router)

        return self.store.retry(work)

    def apply(self, progress: Progress | None = None, chunk: int = 2000) -> dict[str, int]:
        """Apply the transition rules to every live contact, a chunk per transaction;
        returns contacts evaluated and moved."""
        now = self.clock.now_ms()
        with self.store.read() as conn:
            config = load_config(conn)
            total = int(conn.execute(sa.select(sa.func.count()).select_from(schema.contacts)
                                     .where(schema.contacts.c.merged_into.is_(None)))
                        .scalar_one())
        if not any(True for _ in config.rules()):
            return {"evaluated": 0, "moved": 0}
        matched = _matching_sets(self.store, config, now)
        done = moved = 0
        after = 0
        ct = schema.contacts
        while True:
            with self.store.read() as conn:
                ids = [int(i) for i, in conn.execute(
                    sa.select(ct.c.id).where(ct.c.id > after, ct.c.merged_into.is_(None))
                    .order_by(ct.c.id).limit(chunk))]
            if not ids:
                break
            after = ids[-1]
            moved += self.store.retry(partial(self._apply_chunk, config=config,
                                              matched=matched, ids=ids, now=now))
            done += len(ids)
            if progress is not None:
                progress(done, total)
        return {"evaluated": done, "moved": moved}

    def _apply_chunk(self, conn: Connection, *, config: StageConfig,
                     matched: dict[tuple[str, str], set[int]] | None, ids: Sequence[int],
                     now: int) -> int:
        if matched is None:
            return evaluate_contacts(conn, config, ids, now, self.router, cause="apply")
        return apply_matched(conn, config, matched, ids, now, self.router)


def _matching_sets(store: Store, config: StageConfig,
                   now: int) -> dict[tuple[str, str], set[int]] | None:
    """For every rule, the contacts matching it, computed in SQL by the segments' compiler;
    None when the compiler is not available (rules are then evaluated in Python)."""
    select_matching = getattr(importlib.import_module("cadenza.segments"),
                              "select_matching", None)
    if select_matching is None:
        try:
            select_matching = importlib.import_module("cadenza.segments.sql").select_matching
        except (ImportError, AttributeError):
            return None
    found: dict[tuple[str, str], set[int]] = {}
    with store.read() as conn:
        for stage, rule in config.rules():
            query = select_matching(rule.condition, conn.dialect.name, now)
            found[(stage.key, rule.name)] = {int(r[0]) for r in conn.execute(query)}
    return found


def apply_matched(conn: Connection, config: StageConfig,
                  matched: dict[tuple[str, str], set[int]], ids: Sequence[int], now: int,
                  router: Any) -> int:
    """Move `ids` by the rules, given each rule's matching contacts (from SQL); return how
    many moved."""
    current = current_stages(conn, ids)
    moves = []
    for cid in ids:
        here = config.position(current.get(cid))
        for stage, rule in config.rules():
            if stage.key == current.get(cid) or (stage.position < here and not rule.backward):
                continue
            if cid in matched[(stage.key, rule.name)]:
                moves.append(Move(cid, current.get(cid), stage.key, "apply", rule.name))
                break
    return len(apply_moves(conn, config, moves, now, router))

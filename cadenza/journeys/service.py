"""Use cases on journeys for the API and the CLI: drafts, publishing, the live and shadow
pointers, pause/resume/archive, and moving running enrollments between versions.

Each change is one transaction. A published version never changes again (its definition,
hash and number are fixed); live edits become new versions, and enrollments stay on the
version they entered unless `migrate` moves them with an explicit step mapping.
"""

from __future__ import annotations

import builtins
import difflib
from collections.abc import Collection, Mapping
from typing import Any

from sqlalchemy import RowMapping
from sqlalchemy.engine import Connection

from cadenza.clock import Clock
from cadenza.contacts import list_fields
from cadenza.errors import Conflict, NotFound, ValidationFailed
from cadenza.journeys import queries as q
from cadenza.journeys.compile import DEFAULT_CHANNELS, compile_definition
from cadenza.journeys.format import suggest
from cadenza.journeys.loading import (
    check_json_data,
    content_hash,
    definition_yaml,
    load_journey,
)
from cadenza.journeys.models import Journey, JourneyVersion
from cadenza.journeys.spec import JourneySpec, Step, WaitForStep, WaitStep, WaitUntilStep
from cadenza.store import Store

Source = str | bytes | Mapping[str, Any]
"""A journey file's text (YAML or JSON) or its parsed definition."""


class JourneyService:
    """Journeys and their versions over the store."""

    def __init__(self, store: Store, clock: Clock,
                 channels: Collection[str] | None = None, *,
                 publish_sample_contacts: int = 20) -> None:
        self.store = store
        self.clock = clock
        self.publish_sample_contacts = publish_sample_contacts
        """Contacts every reachable template must render for at publish (0: no check)."""
        self.channels = DEFAULT_CHANNELS if channels is None else frozenset(channels)
        self._specs: dict[int, JourneySpec] = {}

    # --- reading -----------------------------------------------------------------------------

    def list(self) -> builtins.list[Journey]:
        """Every journey, by key."""
        with self.store.read() as conn:
            return q.journeys(conn)

    def get(self, key: str) -> Journey:
        """The journey `key` (NotFound if none)."""
        with self.store.read() as conn:
            found = q.journeys(conn, key)
        if not found:
            raise NotFound("journey", key)
        return found[0]

    def versions(self, key: str) -> builtins.list[JourneyVersion]:
        """Every version of a journey, oldest first."""
        with self.store.read() as conn:
            return q.versions(conn, _journey(conn, key))

    def version(self, key: str, number: int | None = None) -> JourneyVersion:
        """Version `number` of a journey; without a number the live version, else the open
        draft, else the newest."""
        with self.store.read() as conn:
            row = _journey(conn, key)
            if number is not None:
                return _version(conn, row, number)
            every = q.versions(conn, row)
        return next((x for x in every if x.live), None) or \
            next((x for x in every if x.status == "draft"), every[-1])

    def diff(self, key: str, a: int, b: int) -> str:
        """A unified diff from version `a` to version `b`, both as YAML ('' when equal)."""
        with self.store.read() as conn:
            row = _journey(conn, key)
            old, new = _version(conn, row, a), _version(conn, row, b)
        lines = difflib.unified_diff(definition_yaml(old.definition).splitlines(keepends=True),
                                     definition_yaml(new.definition).splitlines(keepends=True),
                                     fromfile=f"{key} v{a}", tofile=f"{key} v{b}")
        return "".join(lines)

    def spec(self, version_id: int) -> JourneySpec:
        """The compiled spec of a version (published ones are compiled once and kept)."""
        cached = self._specs.get(version_id)
        if cached is not None:
            return cached
        with self.store.read() as conn:
            found = q.definition_of(conn, version_id)
        if found is None:
            raise NotFound("journey version", version_id)
        status, definition = found
        compiled = compile_definition(definition, channels=self.channels)
        if status == "published":
            self._specs[version_id] = compiled
        return compiled

    def validate(self, source: Source, *, against_store: bool = True) -> JourneySpec:
        """Check a journey file as publishing would (JourneyInvalid lists every problem);
        without `against_store`, templates, declared fields and other journeys are not
        looked up."""
        definition = to_definition(source)
        if not against_store:
            return compile_definition(definition, channels=self.channels)
        with self.store.read() as conn:
            return self._full_check(conn, definition)

    def _full_check(self, conn: Connection, definition: Mapping[str, Any]) -> JourneySpec:
        fields = {f.name: f for f in list_fields(conn) if f.entity == "contact"}
        return compile_definition(definition, fields=fields, channels=self.channels,
                                  templates=q.template_channels(conn),
                                  journeys=q.journey_keys(conn))

    # --- drafts and publishing ---------------------------------------------------------------

    def save_draft(self, source: Source) -> JourneyVersion:
        """Save a definition as the journey's draft: creates the journey when new, replaces
        the open draft, or opens a new version after the published ones."""
        definition = to_definition(source)
        checked = compile_definition(definition, channels=self.channels)
        key = checked.key
        now = self.clock.now_ms()

        def work(conn: Connection) -> JourneyVersion:
            row = q.journey_row(conn, key, lock=True) or \
                q.create_journey(conn, key, checked.name, now)
            if row["status"] == "archived":
                raise Conflict(f"journey {key!r} is archived and takes no new versions; save "
                               "the definition under a new key")
            draft = q.open_draft(conn, row)
            if draft is not None:
                if not q.replace_draft(conn, draft.id, definition):
                    raise Conflict(f"version {draft.number} of {key!r} was published "
                                   "meanwhile; save again to open a new draft")
                number = draft.number
            else:
                number = q.insert_draft(conn, row["id"], definition, now)
            changes = {"name": checked.name} if row["status"] == "draft" else {}
            q.update_journey(conn, row["id"], now, **changes)
            return _version(conn, row, number)

        return self.store.retry(work)

    def publish(self, key: str, number: int | None = None, *,
                shadow: bool = False) -> JourneyVersion:
        """Publish the open draft (or version `number`) after full validation: it becomes
        immutable and content-hashed, and goes live (or, with `shadow`, runs in shadow
        alongside the live version)."""
        now = self.clock.now_ms()

        def work(conn: Connection) -> JourneyVersion:
            row = _journey(conn, key, lock=True)
            if row["status"] == "archived":
                raise Conflict(f"journey {key!r} is archived and cannot be published; save "
                               "the definition under a new key")
            if number is None:
                target = q.open_draft(conn, row)
                if target is None:
                    raise Conflict(f"journey {key!r} has no draft to publish; save one first "
                                   "(cadenza journeys save FILE)")
            else:
                target = _version(conn, row, number)
                if target.status == "published":
                    raise Conflict(f"version {number} of {key!r} is already published; to "
                                   f"make it live again, roll back to it (rollback --to "
                                   f"{number})")
            if shadow and row["live_version_id"] is None:
                raise Conflict(f"journey {key!r} has no live version for a shadow to run "
                               "alongside; publish one live first")
            checked = self._full_check(conn, target.definition)
            from cadenza.channels.validation import check_publish  # channels import journeys

            check_publish(conn, self.store, checked, self.publish_sample_contacts)
            if not q.publish_version(conn, target.id, content_hash(target.definition), now):
                raise Conflict(f"version {target.number} of {key!r} was published meanwhile")
            if shadow:
                q.update_journey(conn, row["id"], now, shadow_version_id=target.id)
            else:
                status = "paused" if row["status"] == "paused" else "live"
                q.update_journey(conn, row["id"], now, live_version_id=target.id,
                                 status=status, name=checked.name)
            return _version(conn, _journey(conn, key), target.number)

        return self.store.retry(work)

    def rollback(self, key: str, to_number: int) -> Journey:
        """Point the live version back at an earlier published version."""
        now = self.clock.now_ms()

        def work(conn: Connection) -> None:
            row = _journey(conn, key, lock=True)
            _not_archived(row, "rolled back")
            target = _version(conn, row, to_number)
            if target.status != "published":
                raise Conflict(f"version {to_number} of {key!r} is a draft; publish it "
                               f"instead (publish --version {to_number})")
            if target.live:
                return
            changes: dict[str, Any] = {"live_version_id": target.id}
            if target.shadow:
                changes["shadow_version_id"] = None
            q.update_journey(conn, row["id"], now, **changes)

        self.store.retry(work)
        return self.get(key)

    def set_shadow(self, key: str, number: int | None) -> Journey:
        """Run published version `number` in shadow alongside the live one (None: stop)."""
        now = self.clock.now_ms()

        def work(conn: Connection) -> None:
            row = _journey(conn, key, lock=True)
            if number is None:
                q.update_journey(conn, row["id"], now, shadow_version_id=None)
                return
            _not_archived(row, "shadowed")
            target = _version(conn, row, number)
            if target.status != "published":
                raise Conflict(f"version {number} of {key!r} is a draft; publish it in "
                               f"shadow (publish --version {number} --shadow)")
            if target.live:
                raise Conflict(f"version {number} of {key!r} is the live version; a shadow "
                               "runs another version alongside it")
            q.update_journey(conn, row["id"], now, shadow_version_id=target.id)

        self.store.retry(work)
        return self.get(key)

    # --- status ------------------------------------------------------------------------------

    def pause(self, key: str) -> Journey:
        """Stop new entries and steps of a live journey until `resume`."""
        return self._move(key, "paused", allowed=("live", "paused"), verb="paused")

    def resume(self, key: str) -> Journey:
        """Let a paused journey run again."""
        return self._move(key, "live", allowed=("paused", "live"), verb="resumed")

    def _move(self, key: str, status: str, allowed: tuple[str, ...], verb: str) -> Journey:
        now = self.clock.now_ms()

        def work(conn: Connection) -> None:
            row = _journey(conn, key, lock=True)
            if row["status"] == "draft":
                raise Conflict(f"journey {key!r} has never been published, so it cannot be "
                               f"{verb}; publish it first")
            _not_archived(row, verb)
            if row["status"] in allowed and row["status"] != status:
                q.update_journey(conn, row["id"], now, status=status)

        self.store.retry(work)
        return self.get(key)

    def archive(self, key: str) -> int:
        """Archive a journey for good: no entries, no new versions, and every active
        enrollment exits (outcome "archived"). How many enrollments were ended."""
        now = self.clock.now_ms()

        def work(conn: Connection) -> int:
            row = _journey(conn, key, lock=True)
            if row["status"] == "archived":
                return 0
            q.update_journey(conn, row["id"], now, status="archived", shadow_version_id=None)
            return q.end_active_enrollments(conn, row["id"], "archived", now)

        return self.store.retry(work)

    # --- migration ---------------------------------------------------------------------------

    def migrate(self, key: str, from_number: int, to_number: int,
                mapping: Mapping[str, str]) -> dict[str, int]:
        """Move the active enrollments of version `from_number` to version `to_number`;
        `mapping` sends each old step to a new one and must cover every step where
        enrollments are. Returns how many moved from each old step."""
        if from_number == to_number:
            raise ValidationFailed("to", f"is version {from_number} itself; name another")
        now = self.clock.now_ms()

        def work(conn: Connection) -> dict[str, int]:
            row = _journey(conn, key, lock=True)
            _not_archived(row, "migrated")
            old, new = _version(conn, row, from_number), _version(conn, row, to_number)
            if new.status != "published":
                raise Conflict(f"version {to_number} of {key!r} is a draft; publish it "
                               "before moving enrollments to it")
            old_spec, new_spec = self._compiled(old), self._compiled(new)
            at = q.active_steps(conn, old.id)
            _check_mapping(mapping, at, old_spec, new_spec, from_number, to_number)
            moved: dict[str, int] = {}
            for node in sorted(at):
                source, target = old_spec.steps.get(node), new_spec.steps[mapping[node]]
                keep = source is not None and _wait_kind(source) is not None and \
                    _wait_kind(source) == _wait_kind(target)
                details = {"from_version": from_number, "to_version": to_number,
                           "to": mapping[node]}
                moved[node] = q.move_enrollments(
                    conn, old.id, node, new.id, mapping[node], keep_wait=keep,
                    wait_event=target.event if isinstance(target, WaitForStep) else None,
                    details=details, now=now)
            return moved

        return self.store.retry(work)

    def _compiled(self, version: JourneyVersion) -> JourneySpec:
        cached = self._specs.get(version.id)
        if cached is None:
            cached = compile_definition(version.definition, channels=self.channels)
            if version.status == "published":
                self._specs[version.id] = cached
        return cached


def to_definition(source: Source) -> dict[str, Any]:
    """The definition in a journey file's text, or a parsed definition checked to be JSON."""
    if isinstance(source, str | bytes):
        return load_journey(source)
    definition = dict(source)
    check_json_data(definition)
    return definition


def _journey(conn: Connection, key: str, *, lock: bool = False) -> RowMapping:
    row = q.journey_row(conn, key, lock=lock)
    if row is None:
        raise NotFound("journey", key)
    return row


def _version(conn: Connection, row: RowMapping, number: int) -> JourneyVersion:
    found = q.version(conn, row, number)
    if found is None:
        raise NotFound("journey version", f"{row['key']} v{number}")
    return found


def _not_archived(row: RowMapping, verb: str) -> None:
    if row["status"] == "archived":
        raise Conflict(f"journey {row['key']!r} is archived and cannot be {verb}; archived "
                       "journeys stay as they are")


def _wait_kind(step: Step) -> type[Step] | None:
    return type(step) if isinstance(step, WaitStep | WaitUntilStep | WaitForStep) else None


def _check_mapping(mapping: Mapping[str, str], at: set[str], old: JourneySpec,
                   new: JourneySpec, from_number: int, to_number: int) -> None:
    """ValidationFailed naming every step the mapping misses or gets wrong."""
    reasons = []
    missing = sorted(at - set(mapping))
    if missing:
        listed = ", ".join(repr(s) for s in missing)
        reasons.append(f"enrollments of version {from_number} are at {listed}, which it "
                       f"does not map; add {missing[0]}=<step of version {to_number}>")
    for source in sorted(set(mapping) - set(old.steps)):
        reasons.append(f"{source!r} names no step of version {from_number}"
                       f"{suggest(source, old.steps)}")
    for source, target in sorted(mapping.items()):
        if target not in new.steps:
            reasons.append(f"{source}={target}: {target!r} names no step of version "
                           f"{to_number}{suggest(target, new.steps)}")
    if reasons:
        raise ValidationFailed("mapping", "; ".join(reasons))

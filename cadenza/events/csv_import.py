"""CSV import of contacts: streamed, checked row by row, stored in set-oriented batches.

This module is the use case (the two passes, the batches, the writes and the report); reading
the file, its header and each row is `csv_read`'s work.

A file is read twice, as a stream both times; neither pass holds the file in memory.

1. **Check.** Every line is decoded and parsed as CSV, the header is read, the SHA-256 is taken
   and repeated email addresses are found (about 20 bytes per row). Whatever makes the *file*
   unreadable raises `ImportFailed` before a single contact is written: a missing or unusable
   header, an unclosed double quote, a line over 1 MiB, and bytes that are not valid in the
   encoding, wherever they are in the file. A file in the wrong encoding is therefore refused
   whole, never half imported with its accents mangled; the message names the line, the byte
   and the fix. A stream that cannot seek (a pipe) is copied to a temporary file on the way.
2. **Import.** Rows are read again in batches of `batch_size`. Each row is validated in full
   first; a bad row is reported (line, column, reason) and writes nothing. The good rows of a
   batch go in one transaction: identities through `resolve`, profiles through
   `apply_profile_updates`, consent through `record_consent`, and the batch's errors and counts
   into its `imports` row: one statement per kind of change, never one per row.

A crash between batches leaves the committed batches in place and the import `running`.
Importing the file again finishes the job: a re-import changes nothing already there (no new
contacts, identities, merges or consent history) and reports those rows as `unchanged`.

Columns (header names are trimmed, lower-cased and their spaces turned into underscores; the
delimiter is a comma, or a semicolon or tab when the header has more of those):

- `email` (also `email_address`, `e-mail`), `user_id`, `phone` (also `phone_number`):
  identities. Every row needs an email or a user id. Phones are in international form.
- `timezone` (IANA name, any case), `locale` (`en`, `pt_BR`, `fr-CA`): profile properties.
- `consent_<channel>_<purpose>`, e.g. `consent_email_marketing`: yes/no, opted_in/opted_out,
  pending... recorded with source `csv:<file name>` and history. A cell that would turn a
  recorded `opted_out` into `opted_in` or `pending` is a row error unless the caller passes
  `allow_resubscribe`: a spreadsheet is not proof that the person consented again.
- anything else: an attribute. Declared fields are checked and coerced (a declared list takes
  `;`-separated items); undeclared ones are stored as text.

An empty cell changes nothing (a CSV cannot clear a value). A cell that a spreadsheet would run
as a formula is refused, so that exported data cannot carry formula injection. Within the file,
rows are deduplicated by email (trimmed, NFC, lower-cased): the last row wins, and earlier ones
are reported as duplicates of it, even when the last row turns out to be invalid.
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cadenza.clock import Clock
from cadenza.contacts import (
    Claim,
    ConsentChange,
    ConsentStatus,
    FieldRegistry,
    ProfileUpdate,
    apply_profile_updates,
    record_consent,
    resolve,
)
from cadenza.errors import CadenzaError, ImportFailed, ValidationFailed
from cadenza.events.csv_read import (
    Column,
    ConsentCell,
    Header,
    Key,
    Lines,
    RowError,
    Source,
    ValidRow,
    dedupe_key,
    fit_cells,
    is_formula_cell,
    read_header,
    read_records,
    validate_row,
    wrong_width,
)
from cadenza.store import Store, insert_rows, schema, select_in

__all__ = [
    "REPORT_LIMIT",
    "DuplicateRow",
    "ImportReport",
    "RowError",
    "import_contacts",
    "is_formula_cell",
]

REPORT_LIMIT = 1000
"""Row errors and duplicates kept in the returned report; `import_errors` holds all of them."""

_INGEST_LOCK = 4242001  # the advisory lock EventService takes: one identity resolver at a time
_MASK64 = (1 << 64) - 1


@dataclass(frozen=True)
class DuplicateRow:
    """A row skipped because a later row has the same email; the later row wins."""

    line: int
    kept_line: int


@dataclass
class ImportReport:
    """What an import did; also stored in `imports` and `import_errors`."""

    import_id: int
    filename: str
    sha256: str
    encoding: str
    total: int = 0
    """Rows in the file, blank rows left out."""
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: int = 0
    duplicates: int = 0
    errors: list[RowError] = field(default_factory=list)
    """The first REPORT_LIMIT row errors, by line."""
    duplicate_rows: list[DuplicateRow] = field(default_factory=list)
    """The first REPORT_LIMIT duplicates."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (CLI and API)."""
        return {
            "import_id": self.import_id, "filename": self.filename, "sha256": self.sha256,
            "encoding": self.encoding, "total": self.total, "created": self.created,
            "updated": self.updated, "unchanged": self.unchanged, "failed": self.failed,
            "duplicates": self.duplicates,
            "errors": [{"line": e.line, "column": e.column, "reason": e.reason}
                       for e in self.errors],
            "duplicate_rows": [{"line": d.line, "kept_line": d.kept_line}
                               for d in self.duplicate_rows],
        }


def import_contacts(
    store: Store,
    clock: Clock,
    stream: BinaryIO,
    filename: str,
    *,
    encoding: str | None = None,
    batch_size: int = 1000,
    progress: Callable[[int], None] | None = None,
    allow_resubscribe: bool = False,
) -> ImportReport:
    """Import contacts from a CSV byte stream; see the module docstring for the rules.

    `encoding` defaults to UTF-8 (a byte-order mark is skipped; a UTF-16 one is honoured).
    `progress` is called after each batch with the number of bytes of the file read so far.
    `allow_resubscribe` lets consent cells turn a recorded opt-out back into opted_in or
    pending; pass it only when the person has consented again outside Cadenza.
    Raises `ImportFailed`, having written nothing but a failed `imports` row, when the file as
    a whole cannot be read.
    """
    if batch_size < 1:
        raise ValidationFailed("batch_size", "must be at least 1")
    name = re.split(r"[\\/]", filename)[-1].strip()[:200] or "upload.csv"
    started = clock.now_ms()
    with Source(stream) as source:
        lines = Lines(source.first_pass(), encoding, source.copy)
        try:
            plan = _check(lines)
        except ImportFailed as exc:
            lines.drain()
            _record_failure(store, clock, name, lines.digest.hexdigest(), started, exc)
            raise
        import_id = store.retry(lambda conn: _open_import(conn, name, plan.sha256, started))
        report = ImportReport(import_id, name, plan.sha256,
                              "utf-8" if plan.encoding == "utf-8-sig" else plan.encoding)
        importer = _Importer(store, clock, report, plan, f"csv:{name}"[:64],
                             allow_resubscribe=allow_resubscribe)
        try:
            importer.run(Lines(source.second_pass(), plan.encoding), batch_size, progress)
        except BaseException as exc:
            with suppress(Exception):  # the original error matters more than recording it
                _record_failure(store, clock, name, plan.sha256, started, exc, import_id)
            raise
    store.retry(lambda conn: _close_import(conn, import_id, "done", clock.now_ms()))
    return report


# -- planning ------------------------------------------------------------------------------


class _Repeats:
    """Dedupe keys found on more than one line, in about 20 bytes per row."""

    def __init__(self) -> None:
        self.keys = [array("Q") for _ in range(256)]  # two 64-bit halves per row
        self.lines = [array("I") for _ in range(256)]

    def add(self, key: int, line: int) -> None:
        self.keys[key & 0xFF].extend((key >> 64, key & _MASK64))
        self.lines[key & 0xFF].append(line)

    def last_lines(self) -> dict[int, int]:
        """Each repeated key and the last line it is on."""
        result: dict[int, int] = {}
        for keys, lines in zip(self.keys, self.lines, strict=True):
            last: dict[int, int] = {}
            repeated: set[int] = set()
            for i, line in enumerate(lines):
                key = keys[2 * i] << 64 | keys[2 * i + 1]
                if key in last:
                    repeated.add(key)
                last[key] = line
            result.update((key, last[key]) for key in repeated)
        return result


@dataclass(frozen=True)
class _Plan:
    header: Header
    encoding: str
    sha256: str
    kept: dict[int, int]
    """Dedupe key -> the line that wins, for emails on several lines."""


def _check(lines: Lines) -> _Plan:
    """The first pass: refuse an unreadable file before anything is written."""
    cells, delimiter, records = read_records(lines)
    header = read_header(cells, delimiter)
    repeats = _Repeats()
    for start, _end, row in records:
        fitted = fit_cells(row, header.width)
        if fitted is not None and (key := dedupe_key(fitted, header)) is not None:
            repeats.add(key, start)
    return _Plan(header, lines.encoding, lines.digest.hexdigest(), repeats.last_lines())


# -- writing -------------------------------------------------------------------------------


@dataclass
class _Batch:
    total: int = 0
    cells: list[tuple[int, list[str]]] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    duplicates: list[DuplicateRow] = field(default_factory=list)


@dataclass
class _Outcome:
    registry: FieldRegistry
    errors: list[RowError]
    created: int = 0
    updated: int = 0
    unchanged: int = 0


class _Importer:
    """The second pass: batches of rows, each validated, then written in one transaction."""

    def __init__(self, store: Store, clock: Clock, report: ImportReport, plan: _Plan,
                 source: str, *, allow_resubscribe: bool) -> None:
        self.store = store
        self.clock = clock
        self.report = report
        self.plan = plan
        self.header = plan.header
        self.source = source
        self.allow_resubscribe = allow_resubscribe

    def run(self, lines: Lines, batch_size: int,
            progress: Callable[[int], None] | None) -> None:
        with self.store.read() as conn:
            registry = FieldRegistry.load(conn)
        _cells, _delimiter, records = read_records(lines)
        batch = _Batch()
        for start, end, cells in records:
            if not any(cell.strip() for cell in cells):
                continue  # blank lines and rows of empty cells
            batch.total += 1
            self._sort(batch, start, end, cells)
            if batch.total >= batch_size:
                registry = self._flush(batch, registry)
                batch = _Batch()
                if progress is not None:
                    progress(lines.offset)
        if batch.total:
            self._flush(batch, registry)
        if progress is not None:
            progress(lines.offset)

    def _sort(self, batch: _Batch, start: int, end: int, cells: list[str]) -> None:
        fitted = fit_cells(cells, self.header.width)
        if fitted is None:
            batch.errors.append(wrong_width(cells, self.header, start, end))
            return
        key = dedupe_key(fitted, self.header)
        kept = self.plan.kept.get(key) if key is not None else None
        if kept is not None and kept != start:
            batch.duplicates.append(DuplicateRow(start, kept))
            return
        batch.cells.append((start, fitted))

    def _flush(self, batch: _Batch, registry: FieldRegistry) -> FieldRegistry:
        # Validation is pure work, done before the transaction so that the write lock is held
        # only for writing; the transaction re-validates if declared fields changed meanwhile.
        checked = self._validate_batch(batch, registry)
        outcome = self.store.retry(lambda conn: self._write(conn, batch, registry, checked))
        errors = sorted(batch.errors + outcome.errors, key=lambda e: e.line)
        report = self.report
        report.total += batch.total
        report.created += outcome.created
        report.updated += outcome.updated
        report.unchanged += outcome.unchanged
        report.failed += len({e.line for e in errors})
        report.duplicates += len(batch.duplicates)
        report.errors.extend(errors[: REPORT_LIMIT - len(report.errors)])
        report.duplicate_rows.extend(batch.duplicates[: REPORT_LIMIT - len(report.duplicate_rows)])
        return outcome.registry

    def _validate_batch(self, batch: _Batch,
                        registry: FieldRegistry) -> tuple[list[ValidRow], list[RowError]]:
        rows: list[ValidRow] = []
        errors: list[RowError] = []
        for line, cells in batch.cells:
            checked = validate_row(line, cells, self.header, registry)
            if isinstance(checked, ValidRow):
                rows.append(checked)
            else:
                errors.extend(checked)
        return rows, errors

    def _write(self, conn: Connection, batch: _Batch, registry: FieldRegistry,
               checked: tuple[list[ValidRow], list[RowError]]) -> _Outcome:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({_INGEST_LOCK})"))
        current = FieldRegistry.load(conn)
        if current.specs != registry.specs:
            checked = self._validate_batch(batch, current)
        rows, errors = checked
        owners, users = _load_identities(conn, rows)
        rows, conflicts = _without_conflicts(rows, owners, users)
        refused: list[RowError] = []
        if not self.allow_resubscribe and any(_resubscribes(row) for row in rows):
            # Locked (on PostgreSQL) so that an opt-out committed meanwhile is either seen here
            # or waits for this batch, and is never overwritten by it.
            recorded = _load_consents(conn, owners.values(), lock=True)
            rows, refused = _without_resubscribes(rows, owners, recorded)
        outcome = _Outcome(current, errors + conflicts + refused)
        if rows:
            self._store_rows(conn, rows, owners, outcome)
        failed = len({e.line for e in batch.errors + outcome.errors})
        _record_batch(conn, self.report.import_id, batch, outcome, failed,
                      self.header.by_name.get("email"))
        return outcome

    def _store_rows(self, conn: Connection, rows: list[ValidRow], owners: dict[Key, int],
                    outcome: _Outcome) -> None:
        at = self.clock.now_ms()
        import_id = self.report.import_id
        resolution = resolve(conn, [
            Claim(message_id=f"import:{import_id}:{row.line}", timestamp=at, reason="import",
                  user_id=row.user_id, keys=row.keys())
            for row in rows
        ], self.source)
        ids = resolution.contact_ids
        # A contact created just now has an empty profile: only the others need reading.
        profiles = _load_profiles(conn, set(ids) - resolution.created)
        profiles.update((cid, {"id": cid, "attributes": {}, "email": None, "phone": None,
                               "timezone": None, "locale": None}) for cid in resolution.created)
        consents = _load_consents(conn, ids)
        owned = dict(owners)
        landed: set[int] = set()
        updates: list[ProfileUpdate] = []
        changes: list[ConsentChange] = []
        for row, cid in zip(rows, ids, strict=True):
            update = ProfileUpdate(cid, at, row.attributes, row.email, row.phone, row.timezone,
                                   row.locale)
            updates.append(update)
            changed = _fold_profile(profiles, update)
            for cell in row.consents:
                topic = (cid, cell.channel, cell.purpose)
                if consents.get(topic) != cell.status.value:
                    consents[topic] = cell.status.value
                    changes.append(ConsentChange(cid, cell.channel, cell.purpose, cell.status,
                                                 self.source, at))
                    changed = True
            for key in row.identities():  # a new identity or a merge changes the contact
                if owned.get(key) != cid:
                    owned[key] = cid
                    changed = True
            if cid in resolution.created and cid not in landed:
                outcome.created += 1
            elif changed:
                outcome.updated += 1
            else:
                outcome.unchanged += 1
            landed.add(cid)
        apply_profile_updates(conn, updates)
        record_consent(conn, changes)


def _load_identities(conn: Connection,
                     rows: Sequence[ValidRow]) -> tuple[dict[Key, int], dict[int, str | None]]:
    """Who owns each identity the rows name, and those contacts' user ids."""
    by_kind: dict[str, set[str]] = {}
    for row in rows:
        for kind, value in row.identities():
            by_kind.setdefault(kind, set()).add(value)
    owners: dict[Key, int] = {}
    for kind, values in by_kind.items():
        for value, cid in select_in(conn, "SELECT value, contact_id FROM identities WHERE "
                                    "kind = {p} AND value IN ({marks})", sorted(values),
                                    before=[kind]):
            owners[(kind, value)] = cid
    users: dict[int, str | None] = dict(select_in(
        conn, "SELECT id, user_id FROM contacts WHERE id IN ({marks})",
        sorted(set(owners.values()))))
    return owners, users


def _without_conflicts(rows: list[ValidRow], owners: dict[Key, int],
                       users: dict[int, str | None]) -> tuple[list[ValidRow], list[RowError]]:
    """Rows whose identities belong to contacts with different user ids are refused.

    Resolution would keep such contacts apart and record a refused merge on every re-import;
    for a file, the row is wrong and the person fixing it needs to know which cell.
    """
    kept: list[ValidRow] = []
    errors: list[RowError] = []
    for row in rows:
        claimed = row.user_id
        problem: RowError | None = None
        for (kind, value), label in row.addresses:
            owner = owners.get((kind, value))
            theirs = users.get(owner) if owner is not None else None
            if theirs is None or theirs == claimed:
                continue
            if claimed is None:
                claimed = theirs
                continue
            problem = RowError(row.line, label, f"{value!r} belongs to the contact with user_id "
                               f"{theirs!r}, but this row is for user_id {claimed!r}; correct "
                               f"the user_id or the {kind}")
            break
        if problem is None:
            kept.append(row)
        else:
            errors.append(problem)
    return kept, errors


Handle = Key | int
"""Whom a row is about: one of its identities, or a contact that already holds one of them."""


def _resubscribes(row: ValidRow) -> bool:
    """True when the row sets some consent to something other than opted_out."""
    return any(cell.status != ConsentStatus.OPTED_OUT for cell in row.consents)


def _without_resubscribes(rows: list[ValidRow], owners: dict[Key, int],
                          recorded: dict[tuple[int, str, str], str]
                          ) -> tuple[list[ValidRow], list[RowError]]:
    """Rows whose consent cells would undo an opt-out are refused, cell by cell.

    A row is checked against every contact its identities name (a merge may keep any of them)
    and against the earlier rows of the batch, linked as resolution will link them, so that the
    outcome is the same whatever the batch size. Where linked rows or contacts disagree, the
    opt-out stands.
    """
    parent: dict[Handle, Handle] = {}
    statuses: dict[Handle, dict[tuple[str, str], str]] = {}
    for (cid, channel, purpose), status in recorded.items():
        statuses.setdefault(cid, {})[(channel, purpose)] = status

    def root(handle: Handle) -> Handle:
        while (up := parent.get(handle, handle)) != handle:
            parent[handle] = parent.get(up, up)
            handle = up
        return handle

    kept: list[ValidRow] = []
    errors: list[RowError] = []
    for row in rows:
        names = row.identities()
        handles: list[Handle] = [*names, *(owners[key] for key in names if key in owners)]
        roots = list(dict.fromkeys(root(handle) for handle in handles))
        opted_out = {topic for r in roots for topic, status in statuses.get(r, {}).items()
                     if status == ConsentStatus.OPTED_OUT}
        problems = [_resubscribe_error(row.line, cell) for cell in row.consents
                    if cell.status != ConsentStatus.OPTED_OUT
                    and (cell.channel, cell.purpose) in opted_out]
        if problems:
            errors.extend(problems)
            continue
        kept.append(row)
        merged: dict[tuple[str, str], str] = {}
        for r in roots:
            parent[r] = roots[0]
            for topic, status in statuses.pop(r, {}).items():
                if merged.get(topic) != ConsentStatus.OPTED_OUT:
                    merged[topic] = status
        merged.update(((cell.channel, cell.purpose), cell.status.value) for cell in row.consents)
        statuses[roots[0]] = merged
    return kept, errors


def _resubscribe_error(line: int, cell: ConsentCell) -> RowError:
    return RowError(line, cell.label, (
        f"{cell.text!r} would change the contact's {cell.channel}/{cell.purpose} consent from "
        f"opted_out to {cell.status.value}, but a file is not proof of fresh consent, so the "
        "row was not imported; remove this cell, or import with --allow-resubscribe (API: "
        "allow_resubscribe=true) if they opted in again"))


def _load_profiles(conn: Connection, ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    c = schema.contacts
    profiles: dict[int, dict[str, Any]] = {}
    wanted = sorted(set(ids))
    for start in range(0, len(wanted), 500):
        query = (sa.select(c.c.id, c.c.attributes, c.c.email, c.c.phone, c.c.timezone,
                           c.c.locale).where(c.c.id.in_(wanted[start : start + 500])))
        for found in conn.execute(query).mappings():
            profiles[found["id"]] = dict(found)
    return profiles


def _fold_profile(profiles: dict[int, dict[str, Any]], update: ProfileUpdate) -> bool:
    """Apply `update` to the in-memory profile as apply_profile_updates will; True if changed."""
    before = profiles[update.contact_id]
    after = {**before, "attributes": {**(before["attributes"] or {}), **update.attributes}}
    for name in ("email", "phone", "timezone", "locale"):
        value = getattr(update, name)
        if value is not None:
            after[name] = value
    if after == before:
        return False
    profiles[update.contact_id] = after
    return True


def _load_consents(conn: Connection, ids: Iterable[int],
                   lock: bool = False) -> dict[tuple[int, str, str], str]:
    """The consent states of contacts `ids`; `lock` holds their rows until commit (PostgreSQL)."""
    sql = "SELECT contact_id, channel, purpose, status FROM consents WHERE contact_id IN ({marks})"
    if lock and conn.dialect.name == "postgresql":
        sql += " FOR UPDATE"
    rows = select_in(conn, sql, sorted(set(ids)))
    return {(cid, channel, purpose): status for cid, channel, purpose, status in rows}


def _record_batch(conn: Connection, import_id: int, batch: _Batch, outcome: _Outcome,
                  failed: int, email: Column | None) -> None:
    problems = [(import_id, e.line, e.column[:128], e.reason)
                for e in sorted(batch.errors + outcome.errors, key=lambda e: e.line)]
    label = email.label[:128] if email is not None else "email"
    problems += [(import_id, d.line, label, f"duplicate: line {d.kept_line} has the same email "
                  "and is imported instead") for d in batch.duplicates]
    insert_rows(conn, schema.import_errors, ("import_id", "row", "field", "reason"), problems)
    i = schema.imports
    conn.execute(sa.update(i).where(i.c.id == import_id).values(
        rows_total=i.c.rows_total + batch.total,
        rows_created=i.c.rows_created + outcome.created,
        rows_updated=i.c.rows_updated + outcome.updated,
        rows_unchanged=i.c.rows_unchanged + outcome.unchanged,
        rows_failed=i.c.rows_failed + failed,
    ))


def _open_import(conn: Connection, name: str, sha256: str, started: int) -> int:
    i = schema.imports
    query = sa.insert(i).values(filename=name, sha256=sha256, status="running",
                                started_at=started).returning(i.c.id)
    return int(conn.execute(query).scalar_one())


def _close_import(conn: Connection, import_id: int, status: str, at: int) -> None:
    i = schema.imports
    conn.execute(sa.update(i).where(i.c.id == import_id).values(status=status, finished_at=at))


def _record_failure(store: Store, clock: Clock, name: str, sha256: str, started: int,
                    exc: BaseException, import_id: int | None = None) -> None:
    """Mark the import failed, with the reason as an error on line 0 (the file as a whole)."""
    reason = exc.message if isinstance(exc, CadenzaError) else f"{type(exc).__name__}: {exc}"

    def work(conn: Connection) -> None:
        found = import_id if import_id is not None else _open_import(conn, name, sha256, started)
        _close_import(conn, found, "failed", clock.now_ms())
        conn.execute(sa.insert(schema.import_errors).values(import_id=found, row=0, field="file",
                                                            reason=reason))

    store.retry(work)

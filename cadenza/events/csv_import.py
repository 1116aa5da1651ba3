"""CSV import of contacts: streamed, checked row by row, stored in set-oriented batches.

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
  pending... recorded with source `csv:<file name>` and history.
- anything else: an attribute. Declared fields are checked and coerced (a declared list takes
  `;`-separated items); undeclared ones are stored as text.

An empty cell changes nothing (a CSV cannot clear a value). A cell that a spreadsheet would run
as a formula is refused, so that exported data cannot carry formula injection. Within the file,
rows are deduplicated by email (trimmed, NFC, lower-cased): the last row wins, and earlier ones
are reported as duplicates of it, even when the last row turns out to be invalid.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import functools
import hashlib
import itertools
import re
import tempfile
import unicodedata
import zoneinfo
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import IO, Any, BinaryIO

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cadenza.clock import Clock
from cadenza.contacts import (
    CHANNELS,
    EMAIL,
    PHONE,
    USER_ID,
    Claim,
    ConsentChange,
    ConsentStatus,
    FieldRegistry,
    ProfileUpdate,
    apply_profile_updates,
    normalize_email,
    normalize_phone,
    record_consent,
    resolve,
)
from cadenza.contacts.consent import parse_status
from cadenza.errors import CadenzaError, ImportFailed, ValidationFailed
from cadenza.store import Store, schema
from cadenza.store.bulk import insert_rows, select_in

MAX_LINE_BYTES = 1 << 20
"""A longer line is not a CSV row; the file is refused."""
REPORT_LIMIT = 1000
"""Row errors and duplicates kept in the returned report; `import_errors` holds all of them."""
ROW = "(row)"
"""The column named by an error about a row as a whole."""

_SPOOL_BYTES = 8 << 20
_INGEST_LOCK = 4242001  # the advisory lock EventService takes: one identity resolver at a time
_ALIASES = {"email_address": "email", "e-mail": "email", "e_mail": "email",
            "phone_number": "phone", "time_zone": "timezone", "userid": "user_id"}
_BUILTIN = ("email", "user_id", "phone", "timezone", "locale")
_NUMBER = re.compile(r"[+-]?(?:\d[\d,]*(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?%?")
_LOCALE = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*")
_DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab"}
_MASK64 = (1 << 64) - 1

Key = tuple[str, str]


@dataclass(frozen=True)
class RowError:
    """Why one row of the file was not imported."""

    line: int
    """Line where the row starts; the header is line 1."""
    column: str
    """The column as named in the header, or '(row)' for the row as a whole."""
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}, {self.column}: {self.reason}"


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


def is_formula_cell(cell: str) -> bool:
    """True when a spreadsheet could run `cell` as a formula (OWASP's CSV-injection list).

    That is text starting with a tab or a carriage return, or, once trimmed, with `=`, `@`, or
    `+`/`-` followed by something that is not a number (`-5`, `+3.5`, `-1,200` are fine).
    """
    if cell[:1] in ("\t", "\r"):
        return True
    text = cell.strip()
    if text[:1] in ("=", "@"):
        return True
    if text[:1] in ("+", "-"):
        return len(text) > 1 and _NUMBER.fullmatch(text) is None
    return False


def import_contacts(
    store: Store,
    clock: Clock,
    stream: BinaryIO,
    filename: str,
    *,
    encoding: str | None = None,
    batch_size: int = 1000,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Import contacts from a CSV byte stream; see the module docstring for the rules.

    `encoding` defaults to UTF-8 (a byte-order mark is skipped; a UTF-16 one is honoured).
    `progress` is called after each batch with the number of bytes of the file read so far.
    Raises `ImportFailed`, having written nothing but a failed `imports` row, when the file as
    a whole cannot be read.
    """
    if batch_size < 1:
        raise ValidationFailed("batch_size", "must be at least 1")
    name = re.split(r"[\\/]", filename)[-1].strip()[:200] or "upload.csv"
    started = clock.now_ms()
    with _Source(stream) as source:
        lines = _Lines(source.first_pass(), encoding, source.copy)
        try:
            plan = _check(lines)
        except ImportFailed as exc:
            lines.drain()
            _record_failure(store, clock, name, lines.digest.hexdigest(), started, exc)
            raise
        import_id = store.retry(lambda conn: _open_import(conn, name, plan.sha256, started))
        report = ImportReport(import_id, name, plan.sha256,
                              "utf-8" if plan.encoding == "utf-8-sig" else plan.encoding)
        importer = _Importer(store, clock, report, plan, f"csv:{name}"[:64])
        try:
            importer.run(_Lines(source.second_pass(), plan.encoding), batch_size, progress)
        except BaseException as exc:
            with suppress(Exception):  # the original error matters more than recording it
                _record_failure(store, clock, name, plan.sha256, started, exc, import_id)
            raise
    store.retry(lambda conn: _close_import(conn, import_id, "done", clock.now_ms()))
    return report


# -- reading -------------------------------------------------------------------------------


class _Source:
    """The stream, readable twice: a seekable one is rewound, another is copied aside."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.start: int | None = None
        try:
            if stream.seekable():
                self.start = stream.tell()
        except OSError:
            self.start = None
        self.spool: IO[bytes] | None = None
        if self.start is None:
            self.spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)  # noqa: SIM115

    def __enter__(self) -> _Source:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.spool is not None:
            self.spool.close()

    @property
    def copy(self) -> Callable[[bytes], object] | None:
        return self.spool.write if self.spool is not None else None

    def first_pass(self) -> IO[bytes]:
        return self.stream

    def second_pass(self) -> IO[bytes]:
        if self.spool is not None:
            self.spool.seek(0)
            return self.spool
        assert self.start is not None
        self.stream.seek(self.start)
        return self.stream


class _Lines:
    """Decoded physical lines of a byte stream, counting lines and bytes as they go.

    Not io.TextIOWrapper: it decodes in blocks, and its UnicodeDecodeError cannot say on which
    line the bad byte is. Here every line is decoded as it is read, so the message can.
    """

    def __init__(self, raw: IO[bytes], encoding: str | None,
                 copy: Callable[[bytes], object] | None = None) -> None:
        self.raw = raw
        self.encoding = encoding or ""
        self.requested = encoding
        self.copy = copy
        self.digest = hashlib.sha256()
        self.line = 0
        """Lines handed out so far: the number of the line being parsed."""
        self.offset = 0
        """Bytes read so far."""

    def __iter__(self) -> Iterator[str]:
        decoder: codecs.IncrementalDecoder | None = None
        pending = ""
        while True:
            chunk = self.raw.readline(MAX_LINE_BYTES + 1)
            self._took(chunk)
            if decoder is None:
                self.encoding = _choose_encoding(self.requested, chunk)
                decoder = codecs.getincrementaldecoder(self.encoding)()
            if len(chunk) > MAX_LINE_BYTES and not chunk.endswith(b"\n"):
                raise ImportFailed(f"line {self.line + 1} is longer than 1 MiB; is this a CSV "
                                   "file? Nothing was imported.")
            try:
                text = decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as exc:
                raise _undecodable(self.encoding, self.line + 1, self.offset, chunk,
                                   exc) from None
            self.offset += len(chunk)
            pending += text
            start = 0
            while (end := pending.find("\n", start)) >= 0:
                self.line += 1
                yield pending[start : end + 1]
                start = end + 1
            pending = pending[start:]
            if not chunk:
                if pending:
                    self.line += 1
                    yield pending
                return

    def _took(self, chunk: bytes) -> None:
        self.digest.update(chunk)
        if self.copy is not None:
            self.copy(chunk)

    def drain(self) -> None:
        """Read the rest of the stream (for the digest and the copy) without decoding it."""
        while chunk := self.raw.read(1 << 16):
            self._took(chunk)


def _choose_encoding(requested: str | None, first: bytes) -> str:
    if requested is None:
        if first.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return "utf-16"
        return "utf-8-sig"
    try:
        info = codecs.lookup(requested)
    except LookupError:
        raise ImportFailed(f"{requested!r} is not an encoding; use a name such as utf-8, cp1252 "
                           "or latin-1") from None
    if not getattr(info, "_is_text_encoding", True):
        raise ImportFailed(f"{requested!r} is not a text encoding; use utf-8, cp1252, latin-1...")
    if info.name == "utf-8":
        return "utf-8-sig"  # skip a byte-order mark if there is one
    if first.startswith(codecs.BOM_UTF8) and info.name != "utf-8-sig":
        raise ImportFailed(f"the file starts with a UTF-8 byte-order mark, so it is UTF-8, not "
                           f"{requested}; import it without --encoding. Nothing was imported.")
    return info.name


def _undecodable(encoding: str, line: int, offset: int, chunk: bytes,
                 exc: UnicodeDecodeError) -> ImportFailed:
    byte = exc.object[exc.start : exc.start + 1].hex() or "end"
    where = offset + max(exc.start - (len(exc.object) - len(chunk)), 0)
    if encoding.startswith("utf-8"):
        guess = "cp1252" if _decodes(chunk, "cp1252") else "latin-1"
        label = "UTF-8"
        fix = f"save the file as UTF-8 (Excel: 'CSV UTF-8') or pass --encoding {guess}"
    else:
        label = encoding
        fix = "pass the --encoding the file was saved in (utf-8, cp1252, latin-1, ...)"
    return ImportFailed(f"line {line} is not valid {label} (byte 0x{byte} at offset {where}); "
                        f"{fix}. Nothing was imported.")


def _decodes(data: bytes, encoding: str) -> bool:
    try:
        data.decode(encoding)
    except UnicodeDecodeError:
        return False
    return True


Record = tuple[int, int, list[str]]
"""First line, last line, cells."""


def _records(lines: _Lines) -> tuple[list[str], str, Iterator[Record]]:
    """The header's cells, the delimiter, and the records after the header."""
    it = iter(lines)
    first = next(it, None)
    if first is None:
        raise ImportFailed("the file is empty; its first line must name the columns, e.g. "
                           "email,first_name,last_name")
    delimiter = max(_DELIMITERS, key=first.count) if any(d in first for d in _DELIMITERS) \
        else ","
    reader = csv.reader(itertools.chain([first], it), delimiter=delimiter, strict=True)

    def records() -> Iterator[Record]:
        end = 0
        while True:
            start = end + 1
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise _broken(start, lines.line, str(exc)) from None
            end = lines.line
            yield start, end, cells

    found = records()
    header = next(found, (1, 1, []))[2]
    return header, delimiter, found


def _broken(start: int, line: int, problem: str) -> ImportFailed:
    if "unexpected end of data" in problem:
        text = (f"line {start}: a double quote opened in this row is never closed; close it, "
                "or write a quote that belongs to the text as two (\"\")")
    elif "expected after" in problem:
        text = (f"line {line}: a quoted cell goes on after its closing quote; quote the whole "
                "cell and write quotes inside it as two (\"\")")
    elif "new-line character" in problem:
        text = (f"line {line}: lines end with a bare carriage return (old Mac format); save "
                "the file again as CSV with ordinary line endings")
    elif "field larger" in problem:
        text = (f"line {start}: a cell is longer than {csv.field_size_limit()} characters; "
                "most likely a double quote in this row is never closed")
    else:
        text = f"line {line}: {problem}"
    return ImportFailed(f"{text}. Nothing was imported.")


@dataclass(frozen=True)
class _Column:
    index: int
    label: str
    """As written in the header (trimmed): what error reports call the column."""
    name: str
    kind: str
    """email, user_id, phone, timezone, locale, consent, attribute, or unnamed."""
    channel: str = ""
    purpose: str = ""


@dataclass(frozen=True)
class _Header:
    columns: tuple[_Column, ...]
    by_name: dict[str, _Column]
    delimiter: str

    @property
    def width(self) -> int:
        return len(self.columns)


def _read_header(cells: list[str], delimiter: str) -> _Header:
    if not any(cell.strip() for cell in cells):
        raise ImportFailed("line 1 is empty; the first line must name the columns, e.g. "
                           "email,first_name,last_name. Nothing was imported.")
    if any("\x00" in cell for cell in cells):
        raise ImportFailed("the header holds NUL characters: the file is probably UTF-16 "
                           "without a byte-order mark; save it as CSV UTF-8 or pass "
                           "--encoding utf-16. Nothing was imported.")
    columns: list[_Column] = []
    by_name: dict[str, _Column] = {}
    for index, cell in enumerate(cells):
        label = cell.strip()
        if not label:
            columns.append(_Column(index, f"column {index + 1}", "", "unnamed"))
            continue
        if is_formula_cell(cell):
            raise ImportFailed(f"column {index + 1} is named {label!r}, which a spreadsheet "
                               "would run as a formula; rename it. Nothing was imported.")
        name = re.sub(r"\s+", "_", label.lower())
        name = _ALIASES.get(name, name)
        if name in by_name:
            other = by_name[name]
            raise ImportFailed(f"columns {other.index + 1} ({other.label!r}) and {index + 1} "
                               f"({label!r}) both mean {name!r}; rename or remove one. "
                               "Nothing was imported.")
        column = _column(index, label, name)
        columns.append(column)
        by_name[name] = column
    if "email" not in by_name and "user_id" not in by_name:
        if any("@" in cell for cell in cells):
            raise ImportFailed("line 1 looks like a data row, not a header; add a first line "
                               "that names the columns, e.g. email,first_name,last_name. "
                               "Nothing was imported.")
        found = ", ".join(c.label for c in columns if c.kind != "unnamed")
        raise ImportFailed(f"no email or user_id column (the header has: {found}); name the "
                           "column of addresses 'email', or the one of your own ids "
                           "'user_id'. Nothing was imported.")
    return _Header(tuple(columns), by_name, delimiter)


def _column(index: int, label: str, name: str) -> _Column:
    if name in _BUILTIN:
        return _Column(index, label, name, name)
    if not name.startswith("consent_"):
        return _Column(index, label, name, "attribute")
    rest = name.removeprefix("consent_")
    for channel in sorted(CHANNELS, key=len, reverse=True):
        purpose = rest.removeprefix(channel + "_")
        if purpose != rest and purpose:
            try:  # the purpose rules live on ConsentChange
                ConsentChange(0, channel, purpose, ConsentStatus.OPTED_IN, "csv", 0)
            except ValidationFailed as exc:
                raise ImportFailed(f"column {label!r}: the purpose {exc.reason}. Nothing was "
                                   "imported.") from None
            return _Column(index, label, name, "consent", channel, purpose)
    word = rest.split("_", 1)[0]
    close = difflib.get_close_matches(word, CHANNELS, n=1)
    hint = f"did you mean 'consent_{close[0]}_...'?" if close else \
        f"channels: {', '.join(CHANNELS)}"
    raise ImportFailed(f"column {label!r}: a consent column is named consent_<channel>_<purpose>"
                       f", e.g. consent_email_marketing, and {word!r} is not a channel ({hint})."
                       " Nothing was imported.")


def _fit(cells: list[str], width: int) -> list[str] | None:
    """The row's cells, or None when their number is wrong (blank extra cells are dropped)."""
    if len(cells) == width:
        return cells
    if len(cells) > width and not any(c.strip() for c in cells[width:]):
        return cells[:width]
    return None


def _wrong_width(cells: list[str], header: _Header, start: int, end: int) -> RowError:
    reason = f"has {len(cells)} cells but the header has {header.width}"
    if end > start:
        reason += (f"; lines {start} to {end} were read as one row, so a double quote on line "
                   f"{start} is probably not closed")
    elif len(cells) > header.width:
        reason += f"; check for a {_DELIMITERS[header.delimiter]} in a cell without quotes"
    return RowError(start, ROW, reason)


def _dedupe_key(cells: list[str], header: _Header) -> int | None:
    column = header.by_name.get("email")
    if column is None:
        return None
    text = unicodedata.normalize("NFC", cells[column.index].strip()).lower()
    if not text:
        return None
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=16).digest())


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
    header: _Header
    encoding: str
    sha256: str
    kept: dict[int, int]
    """Dedupe key -> the line that wins, for emails on several lines."""


def _check(lines: _Lines) -> _Plan:
    """The first pass: refuse an unreadable file before anything is written."""
    cells, delimiter, records = _records(lines)
    header = _read_header(cells, delimiter)
    repeats = _Repeats()
    for start, _end, row in records:
        fitted = _fit(row, header.width)
        if fitted is not None and (key := _dedupe_key(fitted, header)) is not None:
            repeats.add(key, start)
    return _Plan(header, lines.encoding, lines.digest.hexdigest(), repeats.last_lines())


# -- validating ----------------------------------------------------------------------------


@dataclass
class _Row:
    """A validated row, ready to write."""

    line: int
    email: str | None = None
    user_id: str | None = None
    phone: str | None = None
    timezone: str | None = None
    locale: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    consents: list[tuple[str, str, ConsentStatus]] = field(default_factory=list)
    addresses: list[tuple[Key, str]] = field(default_factory=list)
    """Email and phone identities, with the label of their column."""

    def keys(self) -> list[Key]:
        return [key for key, _ in self.addresses]

    def identities(self) -> list[Key]:
        return ([(USER_ID, self.user_id)] if self.user_id else []) + self.keys()


def _validate(line: int, cells: list[str], header: _Header,
              registry: FieldRegistry) -> _Row | list[RowError]:
    """The row to write, or every problem it has."""
    row = _Row(line)
    errors: list[RowError] = []
    for column in header.columns:
        cell = cells[column.index]
        value = cell.strip()
        if not value:
            continue
        if column.kind == "unnamed":
            reason = "has a value but the header gives the column no name; name it or empty it"
        elif "\x00" in cell:
            reason = "contains a NUL character"
        elif is_formula_cell(cell) and not (column.kind == "phone" and value[0] == "+"):
            # A phone's leading '+' is its international prefix; it is stored as E.164.
            reason = _formula_reason(cell)
        else:
            try:
                _assign(row, column, value, registry)
            except ValidationFailed as exc:
                reason = exc.reason
            else:
                continue
        errors.append(RowError(line, column.label, reason))
    if not _given(cells, header, "email") and not _given(cells, header, "user_id"):
        column = header.by_name.get("email") or header.by_name["user_id"]
        errors.append(RowError(line, column.label, "is empty; every row needs an email or a "
                               "user_id"))
    return errors or row


def _given(cells: list[str], header: _Header, name: str) -> bool:
    column = header.by_name.get(name)
    return column is not None and bool(cells[column.index].strip())


def _assign(row: _Row, column: _Column, value: str, registry: FieldRegistry) -> None:
    kind, label = column.kind, column.label
    if kind == "email":
        row.email = normalize_email(value, label)
        row.addresses.append(((EMAIL, row.email), label))
    elif kind == "user_id":
        if len(value) > 256:
            raise ValidationFailed(label, f"is {len(value)} characters long; at most 256")
        row.user_id = value
    elif kind == "phone":
        row.phone = normalize_phone(value, label)
        row.addresses.append(((PHONE, row.phone), label))
    elif kind == "timezone":
        row.timezone = _timezone(value, label)
    elif kind == "locale":
        row.locale = _locale(value, label)
    elif kind == "consent":
        row.consents.append((column.channel, column.purpose, parse_status(value, label)))
    else:
        spec = registry.specs.get(column.name)
        item: Any = value
        if spec is not None and spec.type == "list":
            item = [part.strip() for part in value.split(";") if part.strip()]
        row.attributes.update(registry.check({column.name: item}, label))


def _formula_reason(cell: str) -> str:
    text = cell.strip()
    first = cell[0] if cell[0] in "\t\r" else text[0]
    named = {"\t": "a tab", "\r": "a carriage return"}.get(first, repr(first))
    shown = text if len(text) <= 40 else text[:37] + "..."
    return (f"{shown!r} starts with {named}, so a spreadsheet could run it as a formula "
            "(formula injection); remove that character")


@functools.cache
def _zones() -> dict[str, str]:
    return {zone.lower(): zone for zone in zoneinfo.available_timezones()}


def _timezone(value: str, label: str) -> str:
    found = _zones().get(value.lower())
    if found is not None:
        return found
    raise ValidationFailed(label, f"{value!r} is not an IANA time zone such as 'Europe/Paris' "
                           "or 'America/New_York'")


def _locale(value: str, label: str) -> str:
    if len(value) > 35 or _LOCALE.fullmatch(value) is None:
        raise ValidationFailed(label, f"{value!r} is not a locale such as 'en', 'en-GB' or "
                               "'pt-BR'")
    language, *rest = re.split(r"[-_]", value)
    parts = [language.lower()]
    for part in rest:
        if len(part) == 2 and part.isalpha():
            parts.append(part.upper())
        elif len(part) == 4 and part.isalpha():
            parts.append(part.title())
        else:
            parts.append(part.lower())
    return "-".join(parts)


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
                 source: str) -> None:
        self.store = store
        self.clock = clock
        self.report = report
        self.plan = plan
        self.header = plan.header
        self.source = source

    def run(self, lines: _Lines, batch_size: int,
            progress: Callable[[int], None] | None) -> None:
        with self.store.read() as conn:
            registry = FieldRegistry.load(conn)
        _cells, _delimiter, records = _records(lines)
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
        fitted = _fit(cells, self.header.width)
        if fitted is None:
            batch.errors.append(_wrong_width(cells, self.header, start, end))
            return
        key = _dedupe_key(fitted, self.header)
        kept = self.plan.kept.get(key) if key is not None else None
        if kept is not None and kept != start:
            batch.duplicates.append(DuplicateRow(start, kept))
            return
        batch.cells.append((start, fitted))

    def _flush(self, batch: _Batch, registry: FieldRegistry) -> FieldRegistry:
        # Validation is pure work, done before the transaction so that the write lock is held
        # only for writing; the transaction re-validates if declared fields changed meanwhile.
        checked = self._validate(batch, registry)
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

    def _validate(self, batch: _Batch,
                  registry: FieldRegistry) -> tuple[list[_Row], list[RowError]]:
        rows: list[_Row] = []
        errors: list[RowError] = []
        for line, cells in batch.cells:
            checked = _validate(line, cells, self.header, registry)
            if isinstance(checked, _Row):
                rows.append(checked)
            else:
                errors.extend(checked)
        return rows, errors

    def _write(self, conn: Connection, batch: _Batch, registry: FieldRegistry,
               checked: tuple[list[_Row], list[RowError]]) -> _Outcome:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text(f"SELECT pg_advisory_xact_lock({_INGEST_LOCK})"))
        current = FieldRegistry.load(conn)
        if current.specs != registry.specs:
            checked = self._validate(batch, current)
        rows, errors = checked
        owners, users = _load_identities(conn, rows)
        rows, conflicts = _without_conflicts(rows, owners, users)
        outcome = _Outcome(current, errors + conflicts)
        if rows:
            self._store_rows(conn, rows, owners, outcome)
        failed = len({e.line for e in batch.errors + outcome.errors})
        _record_batch(conn, self.report.import_id, batch, outcome, failed,
                      self.header.by_name.get("email"))
        return outcome

    def _store_rows(self, conn: Connection, rows: list[_Row], owners: dict[Key, int],
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
            for channel, purpose, status in row.consents:
                if consents.get((cid, channel, purpose)) != status.value:
                    consents[(cid, channel, purpose)] = status.value
                    changes.append(ConsentChange(cid, channel, purpose, status, self.source, at))
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
                     rows: Sequence[_Row]) -> tuple[dict[Key, int], dict[int, str | None]]:
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


def _without_conflicts(rows: list[_Row], owners: dict[Key, int],
                       users: dict[int, str | None]) -> tuple[list[_Row], list[RowError]]:
    """Rows whose identities belong to contacts with different user ids are refused.

    Resolution would keep such contacts apart and record a refused merge on every re-import;
    for a file, the row is wrong and the person fixing it needs to know which cell.
    """
    kept: list[_Row] = []
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


def _load_consents(conn: Connection, ids: Iterable[int]) -> dict[tuple[int, str, str], str]:
    rows = select_in(conn, "SELECT contact_id, channel, purpose, status FROM consents "
                     "WHERE contact_id IN ({marks})", sorted(set(ids)))
    return {(cid, channel, purpose): status for cid, channel, purpose, status in rows}


def _record_batch(conn: Connection, import_id: int, batch: _Batch, outcome: _Outcome,
                  failed: int, email: _Column | None) -> None:
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

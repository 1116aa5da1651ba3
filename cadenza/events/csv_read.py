"""Reading a contact CSV: bytes to lines, lines to records, the header to columns, and each row
to a `ValidRow` or the `RowError`s that keep it out.

Nothing here touches the database (`validate_row` is handed the declared fields); `csv_import`
drives these pieces over the file and writes the result.

- **Bytes.** `Source` makes a stream readable twice (a pipe is copied aside on the first pass).
  `Lines` decodes one physical line at a time, so an undecodable byte is reported with its line,
  offset and a fix; UTF-8 is the default, a byte-order mark is skipped, a UTF-16 one honoured.
- **Records.** `read_records` guesses the delimiter from the header (comma, or semicolon or tab
  when the header has more of those) and turns a broken quote into a message that says where.
- **Header.** `read_header` trims, lower-cases and underscores the names, applies the aliases
  and maps each column to an identity, a profile property, a consent or an attribute.
- **Rows.** `validate_row` checks every cell of a row and reports each bad one, refusing cells
  that a spreadsheet would run as formulas (`is_formula_cell`).
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from cadenza.contacts import (
    CHANNELS,
    EMAIL,
    PHONE,
    USER_ID,
    ConsentChange,
    ConsentStatus,
    FieldRegistry,
    normalize_email,
    normalize_phone,
    parse_status,
)
from cadenza.errors import ImportFailed, ValidationFailed

MAX_LINE_BYTES = 1 << 20
"""A longer line is not a CSV row; the file is refused."""
ROW = "(row)"
"""The column named by an error about a row as a whole."""

_SPOOL_BYTES = 8 << 20
_ALIASES = {"email_address": "email", "e-mail": "email", "e_mail": "email",
            "phone_number": "phone", "time_zone": "timezone", "userid": "user_id"}
_BUILTIN = ("email", "user_id", "phone", "timezone", "locale")
_NUMBER = re.compile(r"[+-]?(?:\d[\d,]*(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?%?")
_LOCALE = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*")
_DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab"}

Key = tuple[str, str]
"""An identity: (kind, value)."""


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


# -- reading -------------------------------------------------------------------------------


class Source:
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

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.spool is not None:
            self.spool.close()

    @property
    def copy(self) -> Callable[[bytes], object] | None:
        """Where the first pass must copy what it reads, if anywhere."""
        return self.spool.write if self.spool is not None else None

    def first_pass(self) -> IO[bytes]:
        """The stream to read first."""
        return self.stream

    def second_pass(self) -> IO[bytes]:
        """The same bytes again, once the first pass has read them all."""
        if self.spool is not None:
            self.spool.seek(0)
            return self.spool
        assert self.start is not None
        self.stream.seek(self.start)
        return self.stream


class Lines:
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


def read_records(lines: Lines) -> tuple[list[str], str, Iterator[Record]]:
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
class Column:
    """What one column of the header holds."""

    index: int
    label: str
    """As written in the header (trimmed): what error reports call the column."""
    name: str
    kind: str
    """email, user_id, phone, timezone, locale, consent, attribute, or unnamed."""
    channel: str = ""
    purpose: str = ""


@dataclass(frozen=True)
class Header:
    """The file's columns, by position and by (normalised) name."""

    columns: tuple[Column, ...]
    by_name: dict[str, Column]
    delimiter: str

    @property
    def width(self) -> int:
        return len(self.columns)


def read_header(cells: list[str], delimiter: str) -> Header:
    """Map the header's cells to columns; raise `ImportFailed` when they cannot be used."""
    if not any(cell.strip() for cell in cells):
        raise ImportFailed("line 1 is empty; the first line must name the columns, e.g. "
                           "email,first_name,last_name. Nothing was imported.")
    if any("\x00" in cell for cell in cells):
        raise ImportFailed("the header holds NUL characters: the file is probably UTF-16 "
                           "without a byte-order mark; save it as CSV UTF-8 or pass "
                           "--encoding utf-16. Nothing was imported.")
    columns: list[Column] = []
    by_name: dict[str, Column] = {}
    for index, cell in enumerate(cells):
        label = cell.strip()
        if not label:
            columns.append(Column(index, f"column {index + 1}", "", "unnamed"))
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
    return Header(tuple(columns), by_name, delimiter)


def _column(index: int, label: str, name: str) -> Column:
    if name in _BUILTIN:
        return Column(index, label, name, name)
    if not name.startswith("consent_"):
        return Column(index, label, name, "attribute")
    rest = name.removeprefix("consent_")
    for channel in sorted(CHANNELS, key=len, reverse=True):
        purpose = rest.removeprefix(channel + "_")
        if purpose != rest and purpose:
            try:  # the purpose rules live on ConsentChange
                ConsentChange(0, channel, purpose, ConsentStatus.OPTED_IN, "csv", 0)
            except ValidationFailed as exc:
                raise ImportFailed(f"column {label!r}: the purpose {exc.reason}. Nothing was "
                                   "imported.") from None
            return Column(index, label, name, "consent", channel, purpose)
    word = rest.split("_", 1)[0]
    close = difflib.get_close_matches(word, CHANNELS, n=1)
    hint = f"did you mean 'consent_{close[0]}_...'?" if close else \
        f"channels: {', '.join(CHANNELS)}"
    raise ImportFailed(f"column {label!r}: a consent column is named consent_<channel>_<purpose>"
                       f", e.g. consent_email_marketing, and {word!r} is not a channel ({hint})."
                       " Nothing was imported.")


def fit_cells(cells: list[str], width: int) -> list[str] | None:
    """The row's cells, or None when their number is wrong (blank extra cells are dropped)."""
    if len(cells) == width:
        return cells
    if len(cells) > width and not any(c.strip() for c in cells[width:]):
        return cells[:width]
    return None


def wrong_width(cells: list[str], header: Header, start: int, end: int) -> RowError:
    """The error for a record of lines `start` to `end` whose cells do not fit the header."""
    reason = f"has {len(cells)} cells but the header has {header.width}"
    if end > start:
        reason += (f"; lines {start} to {end} were read as one row, so a double quote on line "
                   f"{start} is probably not closed")
    elif len(cells) > header.width:
        reason += f"; check for a {_DELIMITERS[header.delimiter]} in a cell without quotes"
    return RowError(start, ROW, reason)


def dedupe_key(cells: list[str], header: Header) -> int | None:
    """A 128-bit hash of the row's email (trimmed, NFC, lower-cased), or None without one."""
    column = header.by_name.get("email")
    if column is None:
        return None
    text = unicodedata.normalize("NFC", cells[column.index].strip()).lower()
    if not text:
        return None
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=16).digest())


# -- validating ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ConsentCell:
    """A consent cell of a valid row."""

    channel: str
    purpose: str
    status: ConsentStatus
    label: str
    """The column as named in the header."""
    text: str
    """The cell as written (trimmed), for error messages."""


@dataclass
class ValidRow:
    """A validated row, ready to write."""

    line: int
    email: str | None = None
    user_id: str | None = None
    phone: str | None = None
    timezone: str | None = None
    locale: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    consents: list[ConsentCell] = field(default_factory=list)
    addresses: list[tuple[Key, str]] = field(default_factory=list)
    """Email and phone identities, with the label of their column."""

    def keys(self) -> list[Key]:
        """The email and phone identities."""
        return [key for key, _ in self.addresses]

    def identities(self) -> list[Key]:
        """Every identity the row names, its user id first."""
        return ([(USER_ID, self.user_id)] if self.user_id else []) + self.keys()


def validate_row(line: int, cells: list[str], header: Header,
                 registry: FieldRegistry) -> ValidRow | list[RowError]:
    """The row to write, or every problem it has."""
    row = ValidRow(line)
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


def _given(cells: list[str], header: Header, name: str) -> bool:
    column = header.by_name.get(name)
    return column is not None and bool(cells[column.index].strip())


def _assign(row: ValidRow, column: Column, value: str, registry: FieldRegistry) -> None:
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
        status = parse_status(value, label)
        row.consents.append(ConsentCell(column.channel, column.purpose, status, label, value))
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


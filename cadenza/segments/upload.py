"""Reading a static list's CSV upload: a header row, then one contact per row.

The first column named `email`, `user_id` or `contact_id` (any case) names the contacts;
other columns are ignored. Rows that cannot name a contact (an invalid email, an empty
cell, a non-numeric id) are collected for the report instead of failing the upload.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

from cadenza.contacts import normalize_email
from cadenza.errors import PayloadTooLarge, ValidationFailed
from cadenza.segments.models import MAX_UPLOAD_BYTES

COLUMNS = ("email", "user_id", "contact_id")


@dataclass
class ListedContacts:
    """The contacts a file names, and the rows that named none."""

    contact_ids: list[int] = field(default_factory=list)
    emails: list[str] = field(default_factory=list)
    user_ids: list[str] = field(default_factory=list)
    rows: dict[tuple[str, Any], int] = field(default_factory=dict)
    """(kind, value) -> the line it was on (header is line 1)."""
    bad: list[dict[str, Any]] = field(default_factory=list)


def read_list(data: bytes) -> ListedContacts:
    """The contacts named by a CSV file."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise PayloadTooLarge("file", f"is {len(data)} bytes; uploads are limited to "
                                      f"{MAX_UPLOAD_BYTES // (1024 * 1024)} MiB (split it)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValidationFailed("file", f"is not UTF-8 text (byte {exc.start}); save it as "
                                       "UTF-8 CSV") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise ValidationFailed("file", "is empty; give a header row (email, user_id or "
                                       "contact_id) and one contact per row") from None
    except csv.Error as exc:
        raise ValidationFailed("file", f"line 1 is not CSV: {exc}") from None
    names = [h.strip().lower() for h in header]
    column = next(((i, n) for i, n in enumerate(names) if n in COLUMNS), None)
    if column is None:
        raise ValidationFailed("file", f"has no column named email, user_id or contact_id "
                                       f"(header: {', '.join(header)[:200]!r})")
    index, kind = column
    listed = ListedContacts()
    line = 1
    try:
        for row in reader:
            line += 1
            if not any(cell.strip() for cell in row):
                continue
            value = row[index].strip() if index < len(row) else ""
            _take(listed, kind, value, line)
    except csv.Error as exc:
        raise ValidationFailed("file", f"line {line + 1} is not CSV: {exc}") from None
    return listed


def _take(listed: ListedContacts, kind: str, value: str, line: int) -> None:
    def bad(reason: str) -> None:
        listed.bad.append({"row": line, "kind": kind, "value": value[:256], "reason": reason})

    if not value:
        bad(f"the {kind} cell is empty")
        return
    if kind == "email":
        try:
            email = normalize_email(value)
        except ValidationFailed as exc:
            bad(exc.reason)
            return
        listed.emails.append(email)
        listed.rows.setdefault(("email", email), line)
    elif kind == "user_id":
        if len(value) > 256:
            bad("is longer than 256 characters")
            return
        listed.user_ids.append(value)
        listed.rows.setdefault(("user_id", value), line)
    else:
        if not value.isdigit() or int(value) <= 0 or len(value) > 18:
            bad("is not a contact id (a positive whole number)")
            return
        listed.contact_ids.append(int(value))
        listed.rows.setdefault(("contact_id", int(value)), line)

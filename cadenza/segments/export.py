"""Export a segment's members as CSV, safe to open in a spreadsheet.

Columns: contact_id, email, user_id, then the chosen attributes. A cell that a spreadsheet
would read as a formula (it begins with =, +, -, @, a tab or a carriage return) is
neutralised with a leading single quote, so `=HYPERLINK(...)` in someone's name stays text.
Rows are read in pages by contact id, so an export of a million members streams in bounded
memory.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator, Sequence
from typing import Any

import orjson

from cadenza.errors import ValidationFailed
from cadenza.store import Store, fetch, loads

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
MAX_ATTRIBUTES = 50
_PAGE = 5_000
_ATTRIBUTE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]{0,127}$")


def neutralise(value: Any) -> str:
    """A cell's text, with a quote in front of anything a spreadsheet would run."""
    if value is None:
        return ""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int | float):
        return repr(value) if isinstance(value, float) else str(value)
    elif isinstance(value, str):
        text = value
    else:
        text = orjson.dumps(value).decode()
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def check_attributes(names: Sequence[str]) -> list[str]:
    """The attribute columns asked for, checked."""
    if len(names) > MAX_ATTRIBUTES:
        raise ValidationFailed("attributes", f"asks for {len(names)} columns; at most "
                                             f"{MAX_ATTRIBUTES}")
    for i, name in enumerate(names):
        if not _ATTRIBUTE.match(name):
            raise ValidationFailed(f"attributes.{i}", f"{name!r} is not an attribute name")
    return list(dict.fromkeys(names))


def export_rows(store: Store, segment_id: int, attributes: Sequence[str]
                ) -> Iterator[list[str]]:
    """The header, then one neutralised row per member, by contact id."""
    yield ["contact_id", "email", "user_id", *attributes]
    last = 0
    while True:
        with store.read() as conn:
            mark = "%s" if conn.dialect.name == "postgresql" else "?"
            rows = fetch(conn, f"SELECT c.id, c.email, c.user_id, c.attributes FROM "
                         f"segment_members m JOIN contacts c ON c.id = m.contact_id WHERE "
                         f"m.segment_id = {mark} AND m.contact_id > {mark} "
                         f"ORDER BY m.contact_id LIMIT {_PAGE}", (segment_id, last))
        for cid, email, user_id, raw in rows:
            attrs = loads(raw) or {}
            yield [str(cid), neutralise(email), neutralise(user_id),
                   *(neutralise(attrs.get(name)) for name in attributes)]
        if len(rows) < _PAGE:
            return
        last = int(rows[-1][0])


def csv_chunks(rows: Iterator[list[str]], lines_per_chunk: int = 1_000) -> Iterator[str]:
    """CSV text in chunks of lines (for streaming)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    count = 0
    for row in rows:
        writer.writerow(row)
        count += 1
        if count >= lines_per_chunk:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            count = 0
    if buffer.getvalue():
        yield buffer.getvalue()

from __future__ import annotations

import csv
import io
import itertools
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cadenza.cli import app
from cadenza.clock import FakeClock
from cadenza.contacts import FieldSpec, declare_field
from cadenza.errors import ImportFailed, ValidationFailed
from cadenza.events import DuplicateRow, ImportReport, RowError, import_contacts
from cadenza.events.csv_import import is_formula_cell
from cadenza.store import Store, schema

_names = itertools.count()


def run(store: Store, clock: FakeClock, tmp_path: Path, content: str | bytes,
        name: str = "contacts.csv", **options: Any) -> ImportReport:
    """Write `content` to a file and import it."""
    path = tmp_path / f"upload-{next(_names)}.csv"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    with path.open("rb") as stream:
        return import_contacts(store, clock, stream, name, **options)


def contacts(store: Store) -> dict[str, dict[str, Any]]:
    """Live contacts by email."""
    c = schema.contacts
    with store.read() as conn:
        rows = conn.execute(sa.select(c).where(c.c.merged_into.is_(None))).mappings().all()
    return {row["email"]: dict(row) for row in rows}


def count(store: Store, table: sa.Table) -> int:
    with store.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def import_row(store: Store, import_id: int) -> dict[str, Any]:
    i = schema.imports
    with store.read() as conn:
        return dict(conn.execute(sa.select(i).where(i.c.id == import_id)).mappings().one())


def stored_errors(store: Store, import_id: int) -> list[tuple[int, str, str]]:
    e = schema.import_errors
    with store.read() as conn:
        rows = conn.execute(sa.select(e.c.row, e.c.field, e.c.reason)
                            .where(e.c.import_id == import_id).order_by(e.c.id))
        return [(r, f, reason) for r, f, reason in rows]


def nothing_written(store: Store) -> bool:
    return all(count(store, t) == 0 for t in (schema.contacts, schema.identities,
                                              schema.consents, schema.consent_history))


# -- happy path ----------------------------------------------------------------------------


def test_imports_contacts_with_profile_and_attributes(store: Store, clock: FakeClock,
                                                      tmp_path: Path) -> None:
    report = run(store, clock, tmp_path,
                 " Email ,First Name,last_name,phone,timezone,locale,user_id,Plan\r\n"
                 "Ann@Example.com,Ann,Lee,+1 415 555 0100,europe/paris,pt_br,u-1,pro\r\n"
                 "bob@example.com,Bob,,,,,,\r\n")
    assert (report.total, report.created, report.updated, report.failed) == (2, 2, 0, 0)
    assert report.errors == []
    found = contacts(store)
    ann = found["ann@example.com"]
    assert ann["phone"] == "+14155550100"
    assert ann["timezone"] == "Europe/Paris"
    assert ann["locale"] == "pt-BR"
    assert ann["user_id"] == "u-1"
    assert ann["attributes"] == {"first_name": "Ann", "last_name": "Lee", "plan": "pro"}
    assert found["bob@example.com"]["attributes"] == {"first_name": "Bob"}
    i = schema.identities
    with store.read() as conn:
        keys = set(conn.execute(sa.select(i.c.kind, i.c.value, i.c.source)))
    assert keys == {("email", "ann@example.com", "csv:contacts.csv"),
                    ("phone", "+14155550100", "csv:contacts.csv"),
                    ("user_id", "u-1", "csv:contacts.csv"),
                    ("email", "bob@example.com", "csv:contacts.csv")}
    row = import_row(store, report.import_id)
    assert row["status"] == "done"
    assert (row["rows_total"], row["rows_created"], row["rows_failed"]) == (2, 2, 0)
    assert row["filename"] == "contacts.csv"
    assert len(row["sha256"]) == 64
    assert row["finished_at"] == clock.now_ms()


def test_header_aliases_semicolons_and_user_id_only_rows(store: Store, clock: FakeClock,
                                                         tmp_path: Path) -> None:
    report = run(store, clock, tmp_path,
                 "Email Address;User ID;Phone Number;Company\n"
                 "ann@example.com;;;Acme, Inc.\n"
                 ";u-2;+44 20 7946 0958;\n")
    assert (report.created, report.failed) == (2, 0)
    c = schema.contacts
    with store.read() as conn:
        rows = {r["user_id"] or r["email"]: r for r in conn.execute(sa.select(c)).mappings()}
    assert rows["ann@example.com"]["attributes"] == {"company": "Acme, Inc."}
    assert rows["u-2"]["phone"] == "+442079460958"
    assert rows["u-2"]["email"] is None


def test_existing_contact_is_updated_and_report_says_so(store: Store, clock: FakeClock,
                                                        tmp_path: Path) -> None:
    run(store, clock, tmp_path, "email,plan\nann@example.com,free\nbob@example.com,free\n")
    clock.advance(60_000)
    report = run(store, clock, tmp_path,
                 "email,plan\nann@example.com,pro\nbob@example.com,free\n")
    assert (report.created, report.updated, report.unchanged) == (0, 1, 1)
    found = contacts(store)
    assert found["ann@example.com"]["attributes"] == {"plan": "pro"}
    assert found["ann@example.com"]["updated_at"] == clock.now_ms()
    assert found["bob@example.com"]["updated_at"] == clock.now_ms() - 60_000
    assert count(store, schema.contacts) == 2


def test_empty_cells_change_nothing(store: Store, clock: FakeClock, tmp_path: Path) -> None:
    run(store, clock, tmp_path, "email,plan,timezone\nann@example.com,pro,Europe/Paris\n")
    report = run(store, clock, tmp_path, "email,plan,timezone\nann@example.com, ,\n")
    assert report.unchanged == 1
    ann = contacts(store)["ann@example.com"]
    assert ann["attributes"] == {"plan": "pro"}
    assert ann["timezone"] == "Europe/Paris"


def test_adding_a_user_id_to_a_known_contact_counts_as_an_update(
        store: Store, clock: FakeClock, tmp_path: Path) -> None:
    run(store, clock, tmp_path, "email\nann@example.com\n")
    report = run(store, clock, tmp_path, "email,user_id\nann@example.com,u-1\n")
    assert (report.created, report.updated) == (0, 1)
    assert contacts(store)["ann@example.com"]["user_id"] == "u-1"


# -- consent -------------------------------------------------------------------------------


def test_consent_columns_record_state_and_history(store: Store, clock: FakeClock,
                                                  tmp_path: Path) -> None:
    header = "email,consent_email_marketing,Consent SMS Transactional,consent_in_app_news\n"
    run(store, clock, tmp_path, header + "ann@example.com,yes,pending,no\n",
        name="spring list.csv")
    h = schema.consent_history
    with store.read() as conn:
        history = conn.execute(sa.select(h.c.channel, h.c.purpose, h.c.status,
                                         h.c.previous_status, h.c.source)).all()
        state = set(conn.execute(sa.select(schema.consents.c.channel, schema.consents.c.purpose,
                                           schema.consents.c.status)))
    assert sorted(history) == [
        ("email", "marketing", "opted_in", None, "csv:spring list.csv"),
        ("in_app", "news", "opted_out", None, "csv:spring list.csv"),
        ("sms", "transactional", "pending", None, "csv:spring list.csv"),
    ]
    assert state == {("email", "marketing", "opted_in"), ("in_app", "news", "opted_out"),
                     ("sms", "transactional", "pending")}

    clock.advance(1000)
    report = run(store, clock, tmp_path, header + "ann@example.com,opted-out,,no\n")
    assert report.updated == 1
    with store.read() as conn:
        latest = conn.execute(sa.select(h.c.status, h.c.previous_status, h.c.at)
                              .order_by(h.c.id.desc()).limit(1)).one()
    assert tuple(latest) == ("opted_out", "opted_in", clock.now_ms())
    assert count(store, h) == 4  # the unchanged and empty cells added no history


def test_bad_consent_value_and_bad_consent_column(store: Store, clock: FakeClock,
                                                  tmp_path: Path) -> None:
    report = run(store, clock, tmp_path,
                 "email,consent_email_marketing\nann@example.com,maybe\nbob@example.com,y\n")
    assert report.errors == [RowError(2, "consent_email_marketing", "'maybe' is not a consent "
                                      "status; use opted_in, opted_out or pending")]
    assert set(contacts(store)) == {"bob@example.com"}
    with pytest.raises(ImportFailed, match=r"'emial' is not a channel \(did you mean "
                                           r"'consent_email_\.\.\.'\?\)"):
        run(store, clock, tmp_path, "email,consent_emial_marketing\nann@example.com,yes\n")
    with pytest.raises(ImportFailed, match="consent_<channel>_<purpose>"):
        run(store, clock, tmp_path, "email,consent_email\nann@example.com,yes\n")


def consent_state(store: Store) -> dict[str, str]:
    """Email marketing consent by the contact's email."""
    c, k = schema.contacts, schema.consents
    with store.read() as conn:
        rows = conn.execute(sa.select(c.c.email, k.c.status).join(k, k.c.contact_id == c.c.id)
                            .where(k.c.channel == "email", k.c.purpose == "marketing"))
        return {row.email: row.status for row in rows}


RESUBSCRIBE = ("would change the contact's email/marketing consent from opted_out to {}, but "
               "a file is not proof of fresh consent, so the row was not imported; remove this "
               "cell, or import with --allow-resubscribe (API: allow_resubscribe=true) if they "
               "opted in again")


def test_import_never_undoes_an_opt_out(store: Store, clock: FakeClock, tmp_path: Path) -> None:
    header = "email,plan,consent_email_marketing\n"
    run(store, clock, tmp_path, header + "ann@example.com,free,no\nbob@example.com,free,yes\n"
        "carl@example.com,free,pending\ndora@example.com,free,no\neve@example.com,free,no\n")
    history = count(store, schema.consent_history)
    clock.advance(1000)
    report = run(store, clock, tmp_path, header +
                 "ann@example.com,pro,yes\n"  # refused: the whole row writes nothing
                 "bob@example.com,pro,no\n"  # opting out is always allowed
                 "carl@example.com,pro,opted_in\n"  # pending -> opted_in is a confirmation
                 "dora@example.com,pro,Pending\n"  # refused: asking again needs consent too
                 "eve@example.com,pro,no\n"  # unchanged consent, new plan
                 "fay@example.com,pro,yes\n")  # a new contact opts in
    assert report.errors == [
        RowError(2, "consent_email_marketing", "'yes' " + RESUBSCRIBE.format("opted_in")),
        RowError(5, "consent_email_marketing", "'Pending' " + RESUBSCRIBE.format("pending"))]
    assert (report.failed, report.created, report.updated) == (2, 1, 3)
    assert consent_state(store) == {
        "ann@example.com": "opted_out", "bob@example.com": "opted_out",
        "carl@example.com": "opted_in", "dora@example.com": "opted_out",
        "eve@example.com": "opted_out", "fay@example.com": "opted_in"}
    found = contacts(store)
    assert found["ann@example.com"]["attributes"] == {"plan": "free"}
    assert found["dora@example.com"]["attributes"] == {"plan": "free"}
    assert found["eve@example.com"]["attributes"] == {"plan": "pro"}
    assert count(store, schema.consent_history) == history + 3  # bob, carl, fay
    assert stored_errors(store, report.import_id) == [
        (e.line, e.column, e.reason) for e in report.errors]


def test_allow_resubscribe_records_the_opt_in(store: Store, clock: FakeClock,
                                              tmp_path: Path) -> None:
    header = "email,consent_email_marketing,consent_sms_marketing\n"
    run(store, clock, tmp_path, header + "ann@example.com,no,no\n")
    clock.advance(1000)
    report = run(store, clock, tmp_path, header + "ann@example.com,yes,pending\n",
                 name="reconfirmed.csv", allow_resubscribe=True)
    assert (report.failed, report.updated) == (0, 1)
    h = schema.consent_history
    with store.read() as conn:
        latest = set(conn.execute(sa.select(h.c.channel, h.c.status, h.c.previous_status,
                                            h.c.source, h.c.at).where(h.c.at == clock.now_ms())))
    assert latest == {("email", "opted_in", "opted_out", "csv:reconfirmed.csv", clock.now_ms()),
                      ("sms", "pending", "opted_out", "csv:reconfirmed.csv", clock.now_ms())}


@pytest.mark.parametrize("batch_size", [1, 2, 1000])
def test_an_opt_out_earlier_in_the_file_holds_whatever_the_batch_size(
        store: Store, clock: FakeClock, tmp_path: Path, batch_size: int) -> None:
    report = run(store, clock, tmp_path,
                 "email,user_id,phone,consent_email_marketing\n"
                 "ann@example.com,,+14155550100,no\n"
                 ",u-1,+14155550101,\n"
                 ",u-1,+14155550100,\n"  # merges u-1 and ann: one contact
                 ",u-1,,yes\n"
                 "bob@example.com,,,yes\n",
                 batch_size=batch_size)
    assert [(e.line, e.column) for e in report.errors] == [(5, "consent_email_marketing")]
    found = contacts(store)
    assert set(found) == {"ann@example.com", "bob@example.com"}
    assert found["ann@example.com"]["user_id"] == "u-1"
    assert consent_state(store) == {"ann@example.com": "opted_out",
                                    "bob@example.com": "opted_in"}


def test_an_opt_out_on_any_contact_the_row_names_holds(store: Store, clock: FakeClock,
                                                       tmp_path: Path) -> None:
    run(store, clock, tmp_path, "email,phone,consent_email_marketing\n"
        "ann@example.com,,yes\nann.lee@example.com,+14155550100,no\n")
    report = run(store, clock, tmp_path, "email,phone,consent_email_marketing\n"
                 "ann@example.com,+14155550100,yes\n")
    assert [(e.line, e.column) for e in report.errors] == [(2, "consent_email_marketing")]
    assert count(store, schema.contact_merges) == 0  # the refused row merged nothing


def test_cli_refuses_a_resubscribe_unless_allowed(store: Store, store_url: str,
                                                  tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CADENZA_DATABASE_URL", store_url)
    monkeypatch.setenv("CADENZA_SECRET_KEY", "cli-test-secret-0123456789-0123456789-abcdef")
    monkeypatch.chdir(tmp_path)
    people = tmp_path / "people.csv"
    people.write_text("email,consent_email_marketing\nann@example.com,no\n")
    assert CliRunner().invoke(app, ["contacts", "import", str(people)]).exit_code == 0
    people.write_text("email,consent_email_marketing\nann@example.com,yes\n")
    errors = tmp_path / "errors.csv"
    refused = CliRunner().invoke(app, ["contacts", "import", str(people), "--errors",
                                       str(errors)])
    assert refused.exit_code == 2, refused.output
    assert "1 failed" in refused.output
    assert "--allow-resubscribe" in errors.read_text()
    assert consent_state(store) == {"ann@example.com": "opted_out"}
    allowed = CliRunner().invoke(app, ["contacts", "import", str(people),
                                       "--allow-resubscribe"])
    assert allowed.exit_code == 0, allowed.output
    assert "1 updated" in allowed.output
    assert consent_state(store) == {"ann@example.com": "opted_in"}


# -- declared fields -----------------------------------------------------------------------


def declare(store: Store, spec: FieldSpec) -> None:
    with store.begin() as conn:
        declare_field(conn, spec, 0)


def test_declared_field_mismatch_names_the_column(store: Store, clock: FakeClock,
                                                  tmp_path: Path) -> None:
    declare(store, FieldSpec("seats", "number"))
    declare(store, FieldSpec("trial", "boolean"))
    declare(store, FieldSpec("tags", "list", item_type="string"))
    report = run(store, clock, tmp_path,
                 "email,Seats,Trial,tags\n"
                 "ann@example.com,12,yes,a; b ;\n"
                 "bob@example.com,twelve,maybe,\n")
    assert report.failed == 1
    assert [(e.line, e.column) for e in report.errors] == [(3, "Seats"), (3, "Trial")]
    assert "'twelve' is not a valid number for declared field 'seats'" in report.errors[0].reason
    assert contacts(store)["ann@example.com"]["attributes"] == {
        "seats": 12, "trial": True, "tags": ["a", "b"]}
    assert "bob@example.com" not in contacts(store)


# -- bad rows ------------------------------------------------------------------------------


def test_each_bad_cell_is_reported_with_line_and_column(store: Store, clock: FakeClock,
                                                        tmp_path: Path) -> None:
    report = run(store, clock, tmp_path,
                 "email,phone,timezone,locale,user_id,\n"
                 "not-an-email,,,,,\n"
                 "ann@example.com,12345,Mars/Olympus,english please,,\n"
                 ",,,,,\n"
                 ",,UTC,,,\n"
                 "bob@example.com,,,,,stray\n"
                 "carl@example.com,+1 415 555 0100,UTC,en,,\n")
    assert [(e.line, e.column) for e in report.errors] == [
        (2, "email"), (3, "phone"), (3, "timezone"), (3, "locale"), (5, "email"),
        (6, "column 6")]
    assert "not a valid email address" in report.errors[0].reason
    assert "'12345' is not a phone number" in report.errors[1].reason
    assert "IANA time zone" in report.errors[2].reason
    assert "every row needs an email or a user_id" in report.errors[4].reason
    assert (report.total, report.failed, report.created) == (5, 4, 1)
    assert set(contacts(store)) == {"carl@example.com"}
    assert stored_errors(store, report.import_id) == [
        (e.line, e.column, e.reason) for e in report.errors]
    assert import_row(store, report.import_id)["rows_failed"] == 4


def test_wrong_number_of_cells(store: Store, clock: FakeClock, tmp_path: Path) -> None:
    report = run(store, clock, tmp_path,
                 "email,first_name\n"
                 "ann@example.com,Ann,Lee\n"
                 "bob@example.com\n"
                 "carl@example.com,Carl,,\n"
                 'dora@example.com,"Dora\n'
                 "eve@example.com,Eve\n"
                 'fay@example.com,Fay",x\n')
    assert [(e.line, e.column) for e in report.errors] == [(2, "(row)"), (3, "(row)"),
                                                           (5, "(row)")]
    assert report.errors[0].reason == ("has 3 cells but the header has 2; check for a comma "
                                       "in a cell without quotes")
    assert report.errors[1].reason == "has 1 cells but the header has 2"
    assert "lines 5 to 7 were read as one row" in report.errors[2].reason
    # Trailing empty cells are harmless: Carl is imported.
    assert set(contacts(store)) == {"carl@example.com"}


def test_unclosed_quote_at_the_end_refuses_the_file(store: Store, clock: FakeClock,
                                                    tmp_path: Path) -> None:
    with pytest.raises(ImportFailed, match="line 3: a double quote opened in this row is "
                                           "never closed"):
        run(store, clock, tmp_path, 'email,name\nann@example.com,Ann\nbob@example.com,"Bob\n')
    assert nothing_written(store)


def test_formula_cells_are_refused_and_the_row_writes_nothing(store: Store, clock: FakeClock,
                                                              tmp_path: Path) -> None:
    report = run(store, clock, tmp_path,
                 "email,note,phone\n"
                 "ann@example.com,=HYPERLINK(\"http://x\"),\n"
                 "bob@example.com,@SUM(1),\n"
                 "carl@example.com,+cmd|' /C calc'!A0,\n"
                 "dora@example.com,\"\tx\",\n"
                 "eve@example.com,-2.5,+1 (415) 555-0100\n"
                 "=1+1@example.com,,\n")
    assert [(e.line, e.column) for e in report.errors] == [
        (2, "note"), (3, "note"), (4, "note"), (5, "note"), (7, "email")]
    assert "formula injection" in report.errors[0].reason
    assert "starts with a tab" in report.errors[3].reason
    found = contacts(store)
    assert set(found) == {"eve@example.com"}
    assert found["eve@example.com"]["attributes"] == {"note": "-2.5"}
    assert count(store, schema.identities) == 2


@pytest.mark.parametrize("cell", ["=1", "@x", "+x", "-x", "\tx", "\rx", " =x", "-1+1",
                                  "+A1", "-2-3", "=", "@"])
def test_formula_cells(cell: str) -> None:
    assert is_formula_cell(cell)


@pytest.mark.parametrize("cell", ["", "-", "+", "-5", "+3.5", "-1,200.50", "-.5", "1e-3",
                                  "-2E+10", "50%", "a=b", "ann@example.com", "hello -x"])
def test_not_formula_cells(cell: str) -> None:
    assert not is_formula_cell(cell)


@given(st.sampled_from("=@\t\r"), st.text())
def test_leading_formula_characters_are_always_refused(first: str, rest: str) -> None:
    assert is_formula_cell(first + rest)


@given(st.sampled_from("+-"),
       st.text(min_size=1).filter(lambda t: t.strip() != "" and not t[0].isdigit()
                                  and t[0] != "."))
def test_sign_before_anything_but_a_number_is_refused(sign: str, rest: str) -> None:
    assert is_formula_cell(sign + rest)


@given(st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False)))
def test_numbers_are_never_formulas(number: float) -> None:
    assert not is_formula_cell(str(number))
    assert not is_formula_cell(f"{number:,}")


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=30))
def test_any_cell_is_stored_as_written_or_refused(store: Store, clock: FakeClock,
                                                  tmp_path: Path, value: str) -> None:
    email = f"p{next(_names)}@example.com"
    buffer = io.StringIO()
    csv.writer(buffer).writerows([["email", "note"], [email, value]])
    report = run(store, clock, tmp_path, buffer.getvalue())
    stored = contacts(store).get(email)
    if report.failed:
        assert stored is None
        assert "\x00" in value or is_formula_cell(value)
    elif value.strip():
        assert stored is not None
        assert stored["attributes"] == {"note": value.strip()}
        assert not is_formula_cell(stored["attributes"]["note"])


# -- encodings -----------------------------------------------------------------------------


def test_latin1_file_is_refused_whole_with_a_fix(store: Store, clock: FakeClock,
                                                 tmp_path: Path) -> None:
    rows = "".join(f"p{n}@example.com,Plain\n" for n in range(10))
    content = ("email,first_name\n" + rows + "zoe@example.com,Zoé\n").encode("latin-1")
    with pytest.raises(ImportFailed) as failure:
        run(store, clock, tmp_path, content, batch_size=3)
    offset = content.index(b"\xe9")
    assert failure.value.message == (
        f"line 12 is not valid UTF-8 (byte 0xe9 at offset {offset}); save the file as UTF-8 "
        "(Excel: 'CSV UTF-8') or pass --encoding cp1252. Nothing was imported.")
    assert nothing_written(store)  # not even the ten good rows before the bad byte
    i = schema.imports
    with store.read() as conn:
        status = conn.execute(sa.select(i.c.status, i.c.id)).one()
    assert status[0] == "failed"
    assert stored_errors(store, status[1]) == [(0, "file", failure.value.message)]

    report = run(store, clock, tmp_path, content, encoding="cp1252")
    assert (report.created, report.encoding) == (11, "cp1252")
    assert contacts(store)["zoe@example.com"]["attributes"] == {"first_name": "Zoé"}


def test_utf8_bom_and_utf16_files(store: Store, clock: FakeClock, tmp_path: Path) -> None:
    text = "email,first_name\nann@example.com,Åsa\n"
    report = run(store, clock, tmp_path, text.encode("utf-8-sig"))
    assert (report.created, report.encoding) == (1, "utf-8")
    report = run(store, clock, tmp_path, text.encode("utf-8-sig"), encoding="UTF8")
    assert report.unchanged == 1
    report = run(store, clock, tmp_path,
                 "email\tfirst_name\nbob@example.com\tBjörk\n".encode("utf-16"))
    assert (report.created, report.encoding) == (1, "utf-16")
    assert contacts(store)["bob@example.com"]["attributes"] == {"first_name": "Björk"}


def test_encoding_mistakes_are_explained(store: Store, clock: FakeClock,
                                         tmp_path: Path) -> None:
    text = "email\nann@example.com\n"
    with pytest.raises(ImportFailed, match="UTF-8 byte-order mark"):
        run(store, clock, tmp_path, text.encode("utf-8-sig"), encoding="cp1252")
    with pytest.raises(ImportFailed, match="'klingon' is not an encoding"):
        run(store, clock, tmp_path, text, encoding="klingon")
    with pytest.raises(ImportFailed, match="probably UTF-16 without a byte-order mark"):
        run(store, clock, tmp_path, text.encode("utf-16-le"))
    with pytest.raises(ImportFailed, match="line 2 is not valid cp1252"):
        run(store, clock, tmp_path, b"email\nann@example.com\x81\n", encoding="cp1252")
    assert nothing_written(store)


# -- whole-file problems -------------------------------------------------------------------


@pytest.mark.parametrize(("content", "message"), [
    ("", "the file is empty"),
    ("\n\nann@example.com\n", "line 1 is empty"),
    ("ann@example.com,Ann\nbob@example.com,Bob\n", "line 1 looks like a data row"),
    ("name,plan\nAnn,pro\n", r"no email or user_id column \(the header has: name, plan\)"),
    ("Email,E-mail\na@example.com,b@example.com\n",
     r"columns 1 \('Email'\) and 2 \('E-mail'\) both mean 'email'"),
    ("email,=cmd\nann@example.com,x\n", "would run as a formula"),
    ("email\rann@example.com\rbob@example.com\r", "bare carriage return"),
    ("email,name\nann@example.com,\"Ann\"x\n", "line 2: a quoted cell goes on after"),
    ("email\n" + "x," * ((1 << 19) + 10) + "\n", "line 2 is longer than 1 MiB"),
    ("email,name\nann@example.com,\"" + "x" * 200_000 + "\n",
     "line 2: a cell is longer than 131072 characters"),
])
def test_unreadable_files_fail_whole(store: Store, clock: FakeClock, tmp_path: Path,
                                     content: str, message: str) -> None:
    with pytest.raises(ImportFailed, match=message):
        run(store, clock, tmp_path, content)
    assert nothing_written(store)


def test_batch_size_must_be_positive(store: Store, clock: FakeClock, tmp_path: Path) -> None:
    with pytest.raises(ValidationFailed, match="batch_size"):
        run(store, clock, tmp_path, "email\n", batch_size=0)


# -- duplicates and idempotency ------------------------------------------------------------


def test_duplicate_emails_later_row_wins(store: Store, clock: FakeClock,
                                         tmp_path: Path) -> None:
    report = run(store, clock, tmp_path,
                 "email,plan\n"
                 "Ann@Example.com,free\n"
                 "bob@example.com,free\n"
                 " ann@example.com ,pro\n"
                 "carl@example.com,free\n"
                 "ANN@EXAMPLE.COM,team\n",
                 batch_size=2)
    assert report.duplicate_rows == [DuplicateRow(2, 6), DuplicateRow(4, 6)]
    assert (report.total, report.duplicates, report.created) == (5, 2, 3)
    assert contacts(store)["ann@example.com"]["attributes"] == {"plan": "team"}
    assert count(store, schema.contacts) == 3
    assert stored_errors(store, report.import_id)[:2] == [
        (2, "email", "duplicate: line 6 has the same email and is imported instead"),
        (4, "email", "duplicate: line 6 has the same email and is imported instead")]


def test_reimport_changes_nothing(store: Store, clock: FakeClock, tmp_path: Path) -> None:
    content = ("email,user_id,phone,first_name,consent_email_marketing,timezone\n"
               "ann@example.com,u-1,+14155550100,Ann,yes,UTC\n"
               "bob@example.com,,,Bob,no,\n"
               "ann@example.com,u-1,+14155550100,Annie,yes,UTC\n"
               "carl@example.com,u-3,,Carl,pending,\n")
    first = run(store, clock, tmp_path, content)
    tables = (schema.contacts, schema.identities, schema.consents, schema.consent_history,
              schema.contact_merges)
    before = {t.name: count(store, t) for t in tables}
    snapshot = contacts(store)
    clock.advance(3_600_000)
    second = run(store, clock, tmp_path, content)
    assert (first.created, first.duplicates) == (3, 1)
    assert (second.created, second.updated, second.unchanged, second.duplicates) == (0, 0, 3, 1)
    assert {t.name: count(store, t) for t in tables} == before
    assert contacts(store) == snapshot
    assert import_row(store, second.import_id)["rows_unchanged"] == 3


def test_row_contradicting_stored_user_id_is_refused(store: Store, clock: FakeClock,
                                                     tmp_path: Path) -> None:
    run(store, clock, tmp_path, "email,user_id\nann@example.com,u-1\n")
    report = run(store, clock, tmp_path, "email,user_id\nann@example.com,u-2\n")
    assert report.errors == [RowError(
        2, "email", "'ann@example.com' belongs to the contact with user_id 'u-1', but this row "
        "is for user_id 'u-2'; correct the user_id or the email")]
    assert count(store, schema.contacts) == 1
    assert count(store, schema.contact_merges) == 0


# -- size, batches and atomicity -----------------------------------------------------------


def test_file_larger_than_a_batch(store: Store, clock: FakeClock, tmp_path: Path) -> None:
    rows = [f"p{n}@example.com,{n}" for n in range(2500)]
    rows[1700] = "broken,1700"
    content = "email,n\n" + "\n".join(rows) + "\n"
    done: list[int] = []
    report = run(store, clock, tmp_path, content, batch_size=1000, progress=done.append)
    assert (report.total, report.created, report.failed) == (2500, 2499, 1)
    assert report.errors[0].line == 1702
    assert len(done) == 3  # after each full batch, then at the end
    assert done == sorted(set(done))
    assert done[-1] == len(content)
    assert count(store, schema.contacts) == 2499
    found = contacts(store)
    assert found["p2499@example.com"]["attributes"] == {"n": "2499"}
    row = import_row(store, report.import_id)
    assert (row["rows_total"], row["rows_created"], row["rows_failed"]) == (2500, 2499, 1)


def test_failing_row_leaves_no_trace(store: Store, clock: FakeClock, tmp_path: Path) -> None:
    report = run(store, clock, tmp_path,
                 "email,phone,plan,consent_email_marketing\n"
                 "ann@example.com,+14155550100,pro,yes\n"
                 "bob@example.com,+14155550101,pro,sometimes\n")
    assert report.failed == 1
    i = schema.identities
    with store.read() as conn:
        values = set(conn.execute(sa.select(i.c.value)).scalars())
    assert values == {"ann@example.com", "+14155550100"}
    assert count(store, schema.consent_history) == 1


def test_non_seekable_stream_is_read_twice(store: Store, clock: FakeClock) -> None:
    class Pipe(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self.data = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            chunk = self.data.read(len(buffer))
            buffer[: len(chunk)] = chunk
            return len(chunk)

    stream = io.BufferedReader(Pipe(b"email,plan\nann@example.com,pro\n"))
    assert not stream.seekable()
    report = import_contacts(store, clock, stream, "folder/sub\\stdin.csv")
    assert (report.created, report.filename) == (1, "stdin.csv")
    assert contacts(store)["ann@example.com"]["attributes"] == {"plan": "pro"}


def test_field_declared_during_an_import_applies_to_later_batches(
        store: Store, clock: FakeClock, tmp_path: Path) -> None:
    def declare_once(_done: int) -> None:
        if not count(store, schema.fields):
            declare(store, FieldSpec("seats", "number"))

    report = run(store, clock, tmp_path,
                 "email,seats\nann@example.com,3\nbob@example.com,many\n",
                 batch_size=1, progress=declare_once)
    assert [(e.line, e.column) for e in report.errors] == [(3, "seats")]
    assert set(contacts(store)) == {"ann@example.com"}


def test_crash_mid_import_keeps_whole_batches_and_reimport_finishes(
        store: Store, clock: FakeClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import cadenza.events.csv_import as csv_import

    real = csv_import.record_consent
    calls = itertools.count()

    def failing_second_batch(conn: Any, changes: Any) -> int:
        if next(calls) == 1:
            raise RuntimeError("disk full")
        return real(conn, changes)

    monkeypatch.setattr(csv_import, "record_consent", failing_second_batch)
    content = "email,consent_email_marketing\n" + "".join(
        f"p{n}@example.com,yes\n" for n in range(5))
    with pytest.raises(RuntimeError, match="disk full"):
        run(store, clock, tmp_path, content, batch_size=2)
    assert count(store, schema.contacts) == 2  # batch one committed, batch two rolled back
    assert count(store, schema.consent_history) == 2
    i = schema.imports
    with store.read() as conn:
        failed = conn.execute(sa.select(i)).mappings().one()
    assert (failed["status"], failed["rows_total"], failed["rows_created"]) == ("failed", 2, 2)
    assert stored_errors(store, failed["id"]) == [(0, "file", "RuntimeError: disk full")]

    monkeypatch.setattr(csv_import, "record_consent", real)
    report = run(store, clock, tmp_path, content, batch_size=2)
    assert (report.created, report.unchanged) == (3, 2)
    assert count(store, schema.consent_history) == 5

from __future__ import annotations

import httpx

from tests.api.conftest import Keys

CSV = (
    "email,first_name,plan,consent_email_marketing\n"
    "ada@example.com,Ada,pro,yes\n"
    "not-an-email,Bob,free,no\n"
    "=HYPERLINK(\"http://x\"),Eve,free,yes\n"
    "ADA@example.com,Ada L.,pro,yes\n"
)


def test_upload_reports_rows_and_is_idempotent(client: httpx.Client, keys: Keys) -> None:
    headers = {**keys.admin_headers, "content-type": "text/csv"}
    first = client.post("/api/imports", params={"filename": "people.csv"}, content=CSV,
                        headers=headers)
    assert first.status_code == 201, first.text
    report = first.json()
    assert (report["total"], report["created"], report["failed"], report["duplicates"]) == (
        4, 1, 2, 1)
    assert {e["line"] for e in report["errors"]} == {3, 4}
    assert any(e["column"] == "email" for e in report["errors"])

    stored = client.get(f"/api/imports/{report['import_id']}", headers=keys.admin_headers)
    assert stored.status_code == 200
    assert stored.json()["rows_failed"] == 2
    # The stored report also keeps the duplicate (line 2, superseded by line 5).
    by_line = {e["line"]: e["reason"] for e in stored.json()["errors"]}
    assert set(by_line) == {2, 3, 4}
    assert "line 5" in by_line[2]

    again = client.post("/api/imports", params={"filename": "people.csv"}, content=CSV,
                        headers=headers).json()
    assert again["created"] == 0
    assert again["updated"] == 0
    assert again["unchanged"] == 1

    found = client.get("/api/contacts", params={"email": "ada@example.com"},
                       headers=keys.admin_headers).json()["items"]
    assert len(found) == 1
    assert found[0]["attributes"]["first_name"] == "Ada L."


def test_unreadable_upload_is_a_clear_400(client: httpx.Client, keys: Keys) -> None:
    response = client.post("/api/imports", content=b"first_name\nAda\n",
                           headers={**keys.admin_headers, "content-type": "text/csv"})
    assert response.status_code == 400
    assert "email" in response.json()["error"]["message"]


def test_unknown_import_is_404(client: httpx.Client, keys: Keys) -> None:
    assert client.get("/api/imports/999", headers=keys.admin_headers).status_code == 404


def test_write_key_cannot_import(client: httpx.Client, keys: Keys) -> None:
    response = client.post("/api/imports", content=CSV, headers={
        "Authorization": f"Bearer {keys.write}", "content-type": "text/csv"})
    assert response.status_code == 401

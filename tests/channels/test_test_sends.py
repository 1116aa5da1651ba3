"""Test sends: only to addresses at allowed domains, verified by a mailed token (stored as a
hash), rendered as a real contact, sent through the real email channel with "[Test] "."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator

import httpx
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from cadenza.channels.templates import TemplateService
from cadenza.channels.testsend import TestSendService
from cadenza.cli.main import app as cli_app
from cadenza.clock import FakeClock
from cadenza.errors import Forbidden, NotFound, ValidationFailed
from cadenza.settings import Settings
from cadenza.store import Store, schema
from tests.api.conftest import SECRET, Keys, base_url, client, keys
from tests.api.support import Api, assert_error
from tests.channels.servers import SmtpSink, smtp_sink
from tests.channels.support import add_contact

__all__ = ["base_url", "client", "keys"]


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    """A real SMTP server on loopback."""
    with smtp_sink() as running:
        yield running


@pytest.fixture
def settings(store_url: str, smtp: SmtpSink) -> Settings:
    """Settings for the test store, mail to the sink, test sends to example.com."""
    return Settings.load(database_url=store_url, secret_key=SECRET, key_cache_seconds=0,
                         smtp_host="127.0.0.1", smtp_port=smtp.port, engine=False,
                         test_send_domains="example.com, team.example.org")


@pytest.fixture
def service(store: Store, clock: FakeClock, settings: Settings) -> TestSendService:
    """The test-send service as the API builds it."""
    return TestSendService.from_settings(store, clock, settings)


def token_in(sink: SmtpSink, address: str) -> str:
    """The token of the last verification mail to `address`."""
    mail = [m for m in sink.mails if m.rcpt == address][-1]
    body = mail.mime.get_body(("plain",))
    assert body is not None
    found = re.search(r"Verification token: (\S+)", body.get_content())
    assert found is not None
    return found.group(1)


def template(store: Store, clock: FakeClock) -> int:
    """The 'hello' template and a contact to render it as; the contact's id."""
    TemplateService(store, clock).save(
        "hello", "email", "Hi {{ contact.attributes.name }}",
        "<p>Dear {{ contact.attributes.name }}, order {{ entry.order }}</p>",
        preheader="Preview")
    return add_contact(store, clock.now_ms(), email="real.customer@customer.example",
                       attributes={"name": "Ana"})


def test_adding_mails_a_token_and_stores_only_its_hash(service: TestSendService,
                                                        smtp: SmtpSink, store: Store) -> None:
    added = service.add("Me@Example.com")
    assert added.address == "me@example.com"
    assert not added.verified
    token = token_in(smtp, "me@example.com")
    with store.read() as conn:
        stored = conn.execute(sa.select(schema.test_addresses.c.token_hash)).scalar_one()
    assert stored == hashlib.sha256(token.encode()).hexdigest()
    assert token not in stored
    with pytest.raises(ValidationFailed) as caught:
        service.verify("me@example.com", token[:-1] + ("A" if token[-1] != "A" else "B"))
    assert caught.value.field == "token"
    verified = service.verify("me@example.com", token)
    assert verified.verified
    assert [a.to_dict()["verified"] for a in service.all()] == [True]
    assert service.add("me@example.com").verified  # stays verified, nothing mailed
    assert len(smtp.mails) == 1


def test_a_new_token_replaces_the_old_one(service: TestSendService, smtp: SmtpSink) -> None:
    service.add("me@example.com")
    first = token_in(smtp, "me@example.com")
    service.add("me@example.com")
    second = token_in(smtp, "me@example.com")
    assert first != second
    with pytest.raises(ValidationFailed):
        service.verify("me@example.com", first)
    assert service.verify("me@example.com", second).verified


@pytest.mark.parametrize(("address", "reason"), [
    ("someone@gmail.com", "'gmail.com' is not a test-send domain"),
    ("x@example.com.evil.net", "not a test-send domain"),
    ("x@notexample.com", "not a test-send domain"),
    ("not an address", "not a valid address"),
    ("x@example.com\r\nBcc: victim@evil.net", "not a valid address"),
])
def test_only_addresses_at_allowed_domains(service: TestSendService, smtp: SmtpSink,
                                           address: str, reason: str) -> None:
    with pytest.raises(ValidationFailed, match=reason) as caught:
        service.add(address)
    assert caught.value.field == "address"
    assert smtp.mails == []


def test_subdomains_of_an_allowed_domain_are_allowed(service: TestSendService) -> None:
    assert service.add("qa@mail.team.example.org").address == "qa@mail.team.example.org"


def test_no_domains_means_no_test_sends(store: Store, clock: FakeClock, smtp: SmtpSink,
                                        settings: Settings) -> None:
    off = TestSendService.from_settings(store, clock, settings.model_copy(
        update={"test_send_domains": ""}))
    with pytest.raises(ValidationFailed, match="test sends are turned off"):
        off.add("me@example.com")
    with pytest.raises(ValidationFailed, match="CADENZA_TEST_SEND_DOMAINS"):
        off.send("hello", "me@example.com", 1)


def test_a_test_send_renders_as_the_contact_and_goes_to_the_test_address(
        service: TestSendService, smtp: SmtpSink, store: Store, clock: FakeClock) -> None:
    contact = template(store, clock)
    service.add("me@example.com")
    service.verify("me@example.com", token_in(smtp, "me@example.com"))
    sent = service.send("hello", "me@example.com", contact, {"order": "o-42"})
    assert sent["subject"] == "[Test] Hi Ana"
    mail = smtp.mails[-1]
    assert mail.rcpt == "me@example.com"
    assert mail.subject == "[Test] Hi Ana"
    html = mail.mime.get_body(("html",))
    assert html is not None
    assert "Dear Ana, order o-42" in html.get_content()
    assert all(m.rcpt != "real.customer@customer.example" for m in smtp.mails)


def test_unverified_and_unknown_addresses_get_nothing(service: TestSendService,
                                                      smtp: SmtpSink, store: Store,
                                                      clock: FakeClock) -> None:
    contact = template(store, clock)
    service.add("pending@example.com")
    before = len(smtp.mails)
    with pytest.raises(Forbidden, match="not a verified test address"):
        service.send("hello", "pending@example.com", contact)
    with pytest.raises(Forbidden):
        service.send("hello", "never@example.com", contact)
    with pytest.raises(ValidationFailed, match="not a test-send domain"):
        service.send("hello", "real.customer@customer.example", contact)
    assert len(smtp.mails) == before


def test_a_domain_removed_from_the_settings_stops_test_sends(
        service: TestSendService, smtp: SmtpSink, store: Store, clock: FakeClock,
        settings: Settings) -> None:
    contact = template(store, clock)
    service.add("qa@team.example.org")
    service.verify("qa@team.example.org", token_in(smtp, "qa@team.example.org"))
    narrowed = TestSendService.from_settings(store, clock, settings.model_copy(
        update={"test_send_domains": "example.com"}))
    with pytest.raises(ValidationFailed, match="not a test-send domain"):
        narrowed.send("hello", "qa@team.example.org", contact)


def test_remove(service: TestSendService) -> None:
    service.add("me@example.com")
    service.remove("ME@example.com")
    assert service.all() == []
    with pytest.raises(NotFound):
        service.remove("me@example.com")


@pytest.fixture
def api(client: httpx.Client, keys: Keys) -> Api:
    """Calls against the test server with the fixture keys."""
    return Api(client, keys.write, keys.admin)


def test_the_api_adds_verifies_and_test_sends(api: Api, smtp: SmtpSink, store: Store,
                                              clock: FakeClock) -> None:
    contact = template(store, clock)
    added = api.post("/test-addresses", {"address": "me@example.com"})
    assert added.status_code == 202, added.text
    assert_error(api.post("/test-addresses/verify", {"address": "me@example.com",
                                                     "token": "wrong"}), 400, "token")
    verified = api.post("/test-addresses/verify", {"address": "me@example.com",
                                                   "token": token_in(smtp, "me@example.com")})
    assert verified.status_code == 200
    assert verified.json()["verified"] is True
    assert api.get_ok("/test-addresses")["items"][0]["address"] == "me@example.com"
    sent = api.post("/templates/hello/test-send", {"address": "me@example.com",
                                                   "contact_id": contact,
                                                   "entry": {"order": "o-1"}})
    assert sent.status_code == 200, sent.text
    assert smtp.mails[-1].subject == "[Test] Hi Ana"
    refused = api.post("/templates/hello/test-send", {"address": "other@example.com",
                                                      "contact_id": contact})
    assert refused.status_code == 403
    assert_error(api.post("/test-addresses", {"address": "x@gmail.com"}), 400, "address",
                 "not a test-send domain")
    assert api.delete("/test-addresses/me@example.com").status_code == 200


def test_the_cli_adds_verifies_and_test_sends(settings: Settings, smtp: SmtpSink, store: Store,
                                              clock: FakeClock,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    contact = template(store, clock)
    monkeypatch.setenv("CADENZA_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("CADENZA_SECRET_KEY", SECRET)
    monkeypatch.setenv("CADENZA_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("CADENZA_SMTP_PORT", str(smtp.port))
    monkeypatch.setenv("CADENZA_TEST_SEND_DOMAINS", "example.com")
    runner = CliRunner()
    added = runner.invoke(cli_app, ["test-addresses", "add", "me@example.com"])
    assert added.exit_code == 0, added.output
    assert "token was mailed" in added.output
    token = token_in(smtp, "me@example.com")
    verified = runner.invoke(cli_app, ["test-addresses", "verify", "me@example.com", token])
    assert verified.exit_code == 0
    assert "Verified" in verified.output
    listed = runner.invoke(cli_app, ["test-addresses", "list"])
    assert "me@example.com" in listed.output
    assert "yes" in listed.output
    sent = runner.invoke(cli_app, ["templates", "test-send", "hello", "--to", "me@example.com",
                                   "--contact", str(contact), "--entry", '{"order": "o-1"}'])
    assert sent.exit_code == 0, sent.output
    assert smtp.mails[-1].subject == "[Test] Hi Ana"
    refused = runner.invoke(cli_app, ["test-addresses", "add", "x@gmail.com"])
    assert refused.exit_code == 1
    assert isinstance(refused.exception, ValidationFailed)
    assert "not a test-send domain" in refused.exception.message

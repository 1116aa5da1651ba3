"""Sender identities: saved by key with every header value checked (valid addresses, no line
breaks), read by the email channel, named by templates."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from cadenza.channels.senders import SenderService, check_list_id, check_mailbox
from cadenza.channels.templates import TemplateService
from cadenza.clock import FakeClock
from cadenza.errors import Conflict, NotFound, ValidationFailed
from cadenza.store import Store
from tests.api.conftest import Keys, base_url, client, keys, settings
from tests.api.support import Api, assert_error

__all__ = ["base_url", "client", "keys", "settings"]


def test_save_read_list_delete(store: Store, clock: FakeClock) -> None:
    senders = SenderService(store, clock)
    sender, created = senders.save("news", "Quillstack News <News@Example.com>",
                                   "help@example.com", "Newsletter <news.example.com>")
    assert created
    assert sender.from_address == "Quillstack News <news@example.com>"
    assert sender.list_id == "Newsletter <news.example.com>"
    _, created = senders.save("news", "news@example.com")
    assert not created
    assert senders.get("news").reply_to is None
    assert [s.key for s in senders.all()] == ["news"]
    TemplateService(store, clock).save("hello", "email", "S", "<p>x</p>", sender="news")
    with pytest.raises(Conflict, match="hello"):
        senders.delete("news")
    TemplateService(store, clock).save("hello", "email", "S", "<p>x</p>")
    senders.delete("news")
    with pytest.raises(NotFound):
        senders.get("news")


@pytest.mark.parametrize(("value", "field"), [
    ("Evil\r\nBcc: victim@example.net <a@example.com>", "from_address"),
    ("a@example.com\nBcc: victim@example.net", "from_address"),
    ("not an address", "from_address"),
    ("a@b@example.com", "from_address"),
    ("a@example.com, b@example.com", "from_address"),
    ("Name <a@exa mple.com>", "from_address"),
])
def test_bad_from_addresses_are_refused(store: Store, clock: FakeClock, value: str,
                                        field: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        SenderService(store, clock).save("s", value)
    assert caught.value.field == field


@pytest.mark.parametrize("value", ["News\r\nBcc: x@y.z <news.example.com>", "<nodot>",
                                   "News <a b.example.com>", "x" * 300 + ".example.com"])
def test_bad_list_ids_are_refused(value: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        check_list_id(value)
    assert caught.value.field == "list_id"


def test_list_ids_are_normalised() -> None:
    assert check_list_id("news.example.com") == "<news.example.com>"
    assert check_list_id('"Big" News <news.example.com>') == "Big News <news.example.com>"


@hypothesis_settings(max_examples=200, deadline=None)
@given(st.text(max_size=40), st.sampled_from(["\r", "\n", "\r\n", "\x00", "\x0b"]),
       st.text(max_size=40))
def test_no_line_break_or_control_character_ever_passes(before: str, breaker: str,
                                                        after: str) -> None:
    for check in (lambda v: check_mailbox(v, "from_address"), check_list_id):
        with pytest.raises(ValidationFailed):
            check(f"{before}{breaker}{after} <a@example.com>")


def test_templates_may_only_name_existing_senders_for_email(store: Store,
                                                            clock: FakeClock) -> None:
    templates = TemplateService(store, clock)
    with pytest.raises(ValidationFailed, match="not a sender identity") as caught:
        templates.save("t", "email", "S", "x", sender="ghost")
    assert caught.value.field == "sender"
    SenderService(store, clock).save("news", "news@example.com")
    with pytest.raises(ValidationFailed, match="for email"):
        templates.save("t", "webhook", "", "{}", sender="news")
    assert templates.save("t", "email", "S", "x", sender="news")[0].sender == "news"


@pytest.fixture
def api(client: httpx.Client, keys: Keys) -> Api:
    """Calls against the test server with the fixture keys."""
    return Api(client, keys.write, keys.admin)


def test_the_api(api: Api) -> None:
    put = api.client.put("/api/senders/news", headers=api.admin_headers,
                         json={"from_address": "News <news@example.com>",
                               "list_id": "News <news.example.com>"})
    assert put.status_code == 201, put.text
    assert api.get_ok("/senders")["items"][0]["from_address"] == "News <news@example.com>"
    bad = api.client.put("/api/senders/news", headers=api.admin_headers,
                         json={"from_address": "News\r\nBcc: x@example.net <n@example.com>"})
    assert_error(bad, 400, "from_address", "line break")
    assert api.delete("/senders/news").status_code == 200
    assert api.get("/senders/news").status_code == 404

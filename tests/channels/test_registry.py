"""The channel registry and publish-time parameter checks."""

from __future__ import annotations

from typing import Any

import pytest

from cadenza.channels import ChannelDeps, ChannelRegistry, channel_names, check_params
from cadenza.clock import FakeClock
from cadenza.errors import ValidationFailed
from cadenza.store import Store


def test_names() -> None:
    assert channel_names() == ("email", "log", "sms", "task", "webhook")


def test_build_all_or_some(store: Store, clock: FakeClock) -> None:
    deps = ChannelDeps(store, clock)
    assert ChannelRegistry.build(deps).names() == channel_names()
    some = ChannelRegistry.build(deps, ["log"])
    assert some.names() == ("log",)
    assert some.get("email") is None
    with pytest.raises(ValidationFailed, match="did you mean 'webhook'"):
        ChannelRegistry.build(deps, ["webhok"])


@pytest.mark.parametrize(("channel", "params"), [
    ("log", {}),
    ("log", {"subject": "Hi {{ contact.email }}", "body": "b"}),
    ("email", {}),
    ("task", {"title": "Call", "queue": "sales", "due_at": 5, "details": {"a": 1}}),
    ("task", {"title": "Call", "due_at": None, "due_ms": 1000}),
    ("webhook", {"url": "https://example.com/hook", "data": {"x": 1}}),
])
def test_good_params(channel: str, params: dict[str, Any]) -> None:
    check_params(channel, params, "steps.s.params")


@pytest.mark.parametrize(("channel", "params", "field"), [
    ("task", {}, "p.title"),
    ("task", {"title": 3}, "p.title"),
    ("task", {"title": "T", "queue": ""}, "p.queue"),
    ("task", {"title": "T", "due_ms": -1}, "p.due_ms"),
    ("task", {"title": "T", "due_at": True}, "p.due_at"),
    ("task", {"title": "T", "details": []}, "p.details"),
    ("log", {"url": "x"}, "p.url"),
    ("email", {"subject": "x" * 3000}, "p.subject"),
])
def test_bad_params_name_the_field(channel: str, params: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        check_params(channel, params, "p")
    assert caught.value.field == field


def test_unknown_channel() -> None:
    with pytest.raises(ValidationFailed, match="'fax' is not a channel; one of") as caught:
        check_params("fax", {}, "p")
    assert caught.value.field == "channel"

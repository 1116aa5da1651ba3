"""Send-time policies over HTTP (`/api/policies/{scope}`, a real server on loopback) and the
`cadenza policies` command: set, show, clear, clear errors naming the field."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from cadenza.channels.policies import PolicyService, parse_duration, parse_policy
from cadenza.cli import app
from cadenza.clock import FakeClock, SystemClock
from cadenza.errors import NotFound, ValidationFailed
from cadenza.store import Store
from tests.api.conftest import Keys, base_url, client, keys, settings
from tests.channels.policy_support import add_journey

__all__ = ["base_url", "client", "keys", "settings"]

POLICY = {"timezone": "Europe/Berlin", "consent": {"email": "opt_in"},
          "caps": [{"channel": "email", "limit": 2, "window": "1d"},
                   {"channel": "email", "limit": 5, "window": "7d", "on_exceed": "defer"}],
          "quiet_hours": {"start": "21:00", "end": "08:00", "channels": ["email", "sms"]}}


# --- the model ------------------------------------------------------------------------------


@pytest.mark.parametrize(("document", "message"), [
    ({"caps": [{"channel": "email", "limit": 1, "window": "1d"},
               {"channel": "email", "limit": 2, "window": "7x"}]},
     "caps[1].window: '7x' is not a duration; use 30m, 12h or 7d"),
    ({"caps": [{"channel": "email", "limit": 1, "window": "91d"}]},
     "caps[0].window: '91d' must be between 1m and 90d"),
    ({"caps": [{"channel": "emial", "limit": 1, "window": "1d"}]},
     "caps[0].channel: 'emial' is not a channel (did you mean 'email'?)"),
    ({"caps": [{"channel": "email", "limit": 0, "window": "1d"}]},
     "caps[0].limit: input should be greater than or equal to 1"),
    ({"caps": [{"channel": "email", "limit": 1, "window": "1d", "on_exceed": "queue"}]},
     "caps[0].on_exceed: input should be 'drop' or 'defer'"),
    ({"caps": [{"channel": "email", "window": "1d"}]}, "caps[0].limit: is required"),
    ({"cap": []}, "cap: is not a policy setting (did you mean 'caps'?)"),
    ({"quiet_hours": {"start": "21:00", "end": "8am"}},
     "quiet_hours.end: '8am' is not a time of day; use HH:MM, e.g. 21:00"),
    ({"quiet_hours": {"start": "21:00", "end": "21:00"}},
     "quiet_hours: start and end are both 21:00: the window is empty; remove quiet_hours to "
     "turn them off"),
    ({"timezone": "Europe/Berln"},
     "timezone: 'Europe/Berln' is not a time zone (did you mean 'Europe/Berlin'?)"),
    ({"consent": {"email": "yes"}}, "consent.email: input should be 'opt_in' or 'opt_out'"),
    ([1, 2], "policy: must be a mapping of settings (timezone, consent, caps, quiet_hours), "
             "got list"),
])
def test_bad_policies_name_the_field_and_the_fix(document: object, message: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_policy(document)
    assert caught.value.message == message


@given(amount=st.integers(0, 200_000), unit=st.sampled_from("mhd"),
       space=st.sampled_from(["", " "]))
def test_durations_parse_to_their_length_or_say_why(amount: int, unit: str,
                                                    space: str) -> None:
    ms = amount * {"m": 60_000, "h": 3_600_000, "d": 86_400_000}[unit]
    text = f"{amount}{space}{unit}"
    if 60_000 <= ms <= 90 * 86_400_000:
        assert parse_duration(text) == ms
    else:
        with pytest.raises(ValueError, match=r"between 1m and 90d|not a duration"):
            parse_duration(text)


@given(st.text(max_size=12))
def test_any_text_is_a_duration_or_a_clear_error(text: str) -> None:
    try:
        outcome: int | str = parse_duration(text)
    except ValueError as exc:
        outcome = str(exc)
    assert outcome >= 60_000 if isinstance(outcome, int) else repr(text) in outcome


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.sampled_from(["caps", "channel", "limit", "window",
                                                       "quiet_hours", "start", "end",
                                                       "consent", "email", "timezone",
                                                       "on_exceed", "x"]), inner, max_size=4),
                    max_leaves=12))
def test_any_document_is_a_policy_or_one_validation_error(document: object) -> None:
    try:
        policy = parse_policy(document)
    except ValidationFailed as exc:
        error: ValidationFailed | None = exc
    else:
        error = None
        assert parse_policy(policy.to_config()) == policy
    if error is not None:
        assert error.field
        assert error.reason


def test_journey_policies_hold_only_caps_and_quiet_hours() -> None:
    with pytest.raises(ValidationFailed, match="consent: is set for the whole workspace"):
        parse_policy({"consent": {"email": "opt_in"}}, "journey:promo")
    assert parse_policy({"caps": POLICY["caps"]}, "journey:promo").caps[0].limit == 2


def test_the_stored_form_round_trips_and_leaves_out_defaults() -> None:
    policy = parse_policy(POLICY)
    assert parse_policy(policy.to_config()) == policy
    assert parse_policy({"caps": [{"channel": "sms", "limit": 1, "window": "2h"}]}
                        ).to_config() == {"caps": [{"channel": "sms", "limit": 1,
                                                    "window": "2h"}]}


def test_the_service_checks_scopes_and_journeys(store: Store, clock: FakeClock) -> None:
    service = PolicyService(store, clock)
    assert service.get("workspace").updated_at is None
    with pytest.raises(ValidationFailed, match="'team' is not a scope"):
        service.get("team")
    with pytest.raises(NotFound, match="journey 'promo' not found"):
        service.set("journey:promo", {"caps": POLICY["caps"]})
    add_journey(store, clock, "promo")
    stored, created = service.set("journey:promo", {"caps": POLICY["caps"]})
    assert created
    assert stored.policy.caps[1].on_exceed == "defer"
    assert service.set("journey:promo", {})[1] is False
    assert [p.scope for p in service.all()] == ["journey:promo"]
    assert service.delete("journey:promo")
    assert not service.delete("journey:promo")


# --- HTTP -----------------------------------------------------------------------------------


def test_put_get_delete_over_http(client: httpx.Client, keys: Keys, store: Store,
                                  clock: FakeClock) -> None:
    headers = keys.admin_headers
    default = client.get("/api/policies/workspace", headers=headers)
    assert default.status_code == 200
    assert default.json() == {"scope": "workspace", "policy": {}, "stored": False,
                              "updated_at": None}
    created = client.put("/api/policies/workspace", json=POLICY, headers=headers)
    assert created.status_code == 201
    assert created.json()["policy"] == POLICY
    assert client.put("/api/policies/workspace", json=POLICY, headers=headers
                      ).status_code == 200
    shown = client.get("/api/policies/workspace", headers=headers).json()
    assert shown["stored"] is True
    assert shown["updated_at"] == clock.now_ms()
    assert client.get("/api/policies", headers=headers).json()["items"][0]["scope"] == \
        "workspace"
    assert client.delete("/api/policies/workspace", headers=headers).status_code == 200
    assert client.delete("/api/policies/workspace", headers=headers).status_code == 404
    assert client.get("/api/policies/workspace", headers=headers).json()["stored"] is False


def test_http_errors_name_the_field(client: httpx.Client, keys: Keys, store: Store,
                                    clock: FakeClock) -> None:
    headers = keys.admin_headers
    bad = client.put("/api/policies/workspace", headers=headers,
                     json={"caps": [POLICY["caps"][0], {**POLICY["caps"][0], "window": "7x"}]})
    assert bad.status_code == 400
    error = bad.json()["error"]
    assert error["field"] == "caps[1].window"
    assert error["message"] == "caps[1].window: '7x' is not a duration; use 30m, 12h or 7d"
    missing = client.put("/api/policies/journey:nope", headers=headers, json={})
    assert missing.status_code == 404
    assert client.get("/api/policies/journey:nope", headers=headers).status_code == 404
    assert client.put("/api/policies/everyone", headers=headers, json={}).status_code == 400
    add_journey(store, clock, "promo")
    journey = client.put("/api/policies/journey:promo", headers=headers,
                         json={"timezone": "UTC"})
    assert journey.status_code == 400
    assert journey.json()["error"]["field"] == "timezone"
    assert client.put("/api/policies/journey:promo", headers=headers,
                      json={"caps": POLICY["caps"]}).status_code == 201


def test_policies_need_the_admin_key(client: httpx.Client, keys: Keys) -> None:
    assert client.get("/api/policies/workspace").status_code == 401
    write = {"Authorization": f"Bearer {keys.write}"}
    assert client.put("/api/policies/workspace", json={}, headers=write).status_code in (401,
                                                                                         403)


# --- CLI ------------------------------------------------------------------------------------


@pytest.fixture
def env(store_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The CLI pointed at the test store."""
    monkeypatch.setenv("CADENZA_DATABASE_URL", store_url)
    monkeypatch.setenv("CADENZA_SECRET_KEY", "cli-test-secret-0123456789-0123456789-abcdef")
    monkeypatch.chdir(tmp_path)


def run(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(app, list(args), catch_exceptions=True)
    assert result.exit_code == code, result.output
    return result.output + (str(result.exception) if code and result.exception else "")


def test_cli_set_show_clear(env: None, store: Store, tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    # Unquoted 21:00 must stay a time (YAML 1.1 would read it as 1260).
    path.write_text("timezone: Europe/Berlin\n"
                    "consent: {email: opt_in}\n"
                    "caps:\n"
                    "  - {channel: email, limit: 2, window: 1d}\n"
                    "quiet_hours: {start: 21:00, end: 08:00, channels: [email]}\n")
    assert "Created" in run("policies", "set", str(path))
    shown = run("policies", "show")
    assert "21:00-08:00" in shown
    assert "email: opt_in" in shown
    assert "local days" in shown
    assert '"limit": 2' in run("policies", "show", "workspace", "--json")
    assert "Replaced" in run("policies", "set", str(path), "--scope", "workspace")
    assert "workspace" in run("policies", "list")
    assert "Cleared" in run("policies", "clear")
    assert "nothing changed" in run("policies", "clear", "workspace")
    assert "opt_out on every channel" in run("policies", "show")


def test_cli_errors(env: None, store: Store, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"caps": [{"channel": "email", "limit": 1, "window": "7x"}]}')
    out = run("policies", "set", str(bad), code=1)
    assert "caps[0].window" in out
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    assert "mapping of policy settings" in run("policies", "set", str(listed), code=1)
    journey = tmp_path / "journey.yaml"
    journey.write_text("caps: [{channel: email, limit: 1, window: 1d}]\n")
    assert "not found" in run("policies", "set", str(journey), "-s", "journey:nope", code=1)
    add_journey(store, FakeClock(SystemClock().now_ms()), "promo")
    assert "Created" in run("policies", "set", str(journey), "-s", "journey:promo")

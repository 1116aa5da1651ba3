"""Users, roles, sessions and password resets."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from cadenza.clock import FakeClock
from cadenza.errors import AuthError, Conflict, Forbidden, NotFound, ValidationFailed
from cadenza.governance.roles import (
    BUILTIN_ROLES,
    PERMISSIONS,
    Principal,
    check_permission_pattern,
    grants,
)
from cadenza.governance.users import RESET_MS, SESSION_MS, UserService
from cadenza.store import Store, schema

PASSWORD = "correct horse battery staple"


@pytest.fixture
def users(store: Store, clock: FakeClock) -> UserService:
    return UserService(store, clock)


def test_a_user_signs_in_and_the_session_carries_their_roles(users: UserService) -> None:
    users.create_user("ann", PASSWORD, ["marketer"], email="ann@example.com")
    session = users.sign_in("ann", PASSWORD)
    assert session.token
    again = users.session(session.token)
    assert again.user.username == "ann"
    assert again.principal.can("journey.publish")
    assert not again.principal.can("journey.approve")
    assert not again.principal.can("key.create")


def test_the_password_is_stored_as_an_argon2id_hash(store: Store, users: UserService) -> None:
    users.create_user("ann", PASSWORD, ["viewer"])
    with store.read() as conn:
        stored = conn.execute(sa.select(schema.users.c.password_hash)).scalar_one()
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored


def test_unknown_user_wrong_password_and_disabled_account_look_the_same(
        users: UserService) -> None:
    users.create_user("ann", PASSWORD, ["viewer"])
    users.create_user("bob", PASSWORD, ["viewer"])
    users.set_status("bob", "disabled")
    messages = set()
    for name, password in (("nobody", PASSWORD), ("ann", "wrong password!!"), ("bob", PASSWORD)):
        with pytest.raises(AuthError) as caught:
            users.sign_in(name, password)
        messages.add(caught.value.message)
    assert len(messages) == 1


def test_failed_sign_ins_are_rate_limited_even_for_unknown_accounts(
        users: UserService, clock: FakeClock) -> None:
    users.create_user("ann", PASSWORD, ["viewer"])
    for name in ("ann", "ghost"):
        for _ in range(5):
            with pytest.raises(AuthError, match="wrong"):
                users.sign_in(name, "not the password")
        with pytest.raises(AuthError, match="too many"):
            users.sign_in(name, PASSWORD if name == "ann" else "x")
    clock.advance(15 * 60_000)
    assert users.sign_in("ann", PASSWORD).token


def test_failures_from_one_address_are_limited_across_usernames(users: UserService) -> None:
    for i in range(5):
        with pytest.raises(AuthError, match="wrong"):
            users.sign_in(f"guess{i}", "not the password", client="203.0.113.9")
    with pytest.raises(AuthError, match="too many"):
        users.sign_in("another", "not the password", client="203.0.113.9")


def test_sessions_expire_end_on_sign_out_and_when_the_user_is_disabled(
        users: UserService, clock: FakeClock) -> None:
    users.create_user("ann", PASSWORD, ["viewer"])
    first = users.sign_in("ann", PASSWORD)
    clock.advance(SESSION_MS)
    with pytest.raises(AuthError):
        users.session(first.token)
    second = users.sign_in("ann", PASSWORD)
    users.sign_out(second.token)
    with pytest.raises(AuthError):
        users.session(second.token)
    third = users.sign_in("ann", PASSWORD)
    users.set_status("ann", "disabled")
    with pytest.raises(AuthError):
        users.session(third.token)


def test_a_reset_token_works_once_in_time_and_ends_every_session(
        users: UserService, clock: FakeClock) -> None:
    users.create_user("ann", PASSWORD, ["viewer"], email="ann@example.com")
    assert users.request_reset("nobody@example.com") is None
    live = users.sign_in("ann", PASSWORD)
    token = users.request_reset("ann@example.com")
    assert token
    users.reset_password(token, "a brand new passphrase")
    with pytest.raises(AuthError):
        users.session(live.token)
    with pytest.raises(AuthError, match="not valid"):
        users.reset_password(token, "yet another passphrase")
    assert users.sign_in("ann", "a brand new passphrase").token
    late = users.request_reset("ann@example.com")
    assert late
    clock.advance(RESET_MS)
    with pytest.raises(AuthError, match="not valid"):
        users.reset_password(late, "too late passphrase")


@pytest.mark.parametrize(("username", "password", "roles", "field"), [
    ("Ann Smith", PASSWORD, ["viewer"], "username"),
    ("ann", "short", ["viewer"], "password"),
    ("ann", "x" * 2000, ["viewer"], "password"),
    ("ann", PASSWORD, [], "roles"),
    ("ann", PASSWORD, ["superuser"], "roles.0"),
])
def test_bad_users_are_refused_naming_the_field(users: UserService, username: str,
                                                password: str, roles: list[str],
                                                field: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        users.create_user(username, password, roles)
    assert caught.value.field == field
    assert users.users() == []


def test_usernames_and_emails_are_unique(users: UserService) -> None:
    users.create_user("ann", PASSWORD, ["viewer"], email="ann@example.com")
    with pytest.raises(Conflict):
        users.create_user("ann", PASSWORD, ["viewer"])
    with pytest.raises(Conflict):
        users.create_user("anna", PASSWORD, ["viewer"], email="ann@example.com")


def test_custom_roles_grant_their_patterns(users: UserService, store: Store) -> None:
    users.save_role("campaign-ops", "Campaign ops", ["journey.*", "segment.read"])
    user = users.create_user("cid", PASSWORD, ["campaign-ops"])
    with store.read() as conn:
        principal = users.principal(conn, user)
    assert principal.can("journey.publish")
    assert principal.can("journey.approve")
    assert principal.can("segment.read")
    assert not principal.can("segment.export")
    with pytest.raises(Conflict):
        users.save_role("admin", "Admin", ["*"])
    with pytest.raises(ValidationFailed, match="journey has no verb 'launch'"):
        users.save_role("x", "X", ["journey.launch"])
    with pytest.raises(NotFound):
        users.set_roles("nobody", ["viewer"])


def test_principals_refuse_naming_the_missing_permission() -> None:
    viewer = Principal("user", "vic", BUILTIN_ROLES["viewer"])
    with pytest.raises(Forbidden, match=r"'journey\.publish'"):
        viewer.require("journey.publish")
    viewer.require("journey.read")
    with pytest.raises(ValueError, match="unknown permission"):
        viewer.can("journey.fly")


def test_every_built_in_role_names_only_real_permissions() -> None:
    for role, patterns in BUILTIN_ROLES.items():
        for pattern in patterns:
            assert check_permission_pattern(pattern, role) == pattern
    assert all(grants(BUILTIN_ROLES["admin"], p) for p in PERMISSIONS)
    assert not any(grants(BUILTIN_ROLES["viewer"], p) for p in PERMISSIONS
                   if not p.endswith(".read"))

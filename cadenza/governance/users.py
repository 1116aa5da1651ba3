"""Users, custom roles, dashboard sessions and password resets.

Passwords are hashed with argon2id (argon2-cffi, its recommended parameters). Sign-in does
the same work whether or not the account exists (a dummy hash is verified), answers the same
error either way, and is rate-limited per username and per client address. Session tokens and
reset tokens are random, shown once, and stored only as SHA-256 hashes. A reset request
answers the same way for unknown addresses.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy.engine import Connection

from cadenza.clock import Clock
from cadenza.errors import AuthError, Conflict, NotFound, ValidationFailed
from cadenza.governance.roles import (
    BUILTIN_ROLES,
    Principal,
    check_permission_pattern,
    check_role_key,
    role_permissions,
)
from cadenza.store import Store, schema

u = schema.users
r = schema.roles
s = schema.user_sessions
pr = schema.password_resets

SESSION_MS = 12 * 3_600_000
"""A dashboard session lasts twelve hours from sign-in."""
RESET_MS = 30 * 60_000
"""A password-reset token is good for thirty minutes, once."""
MIN_PASSWORD = 12
MAX_PASSWORD = 1024
_USERNAME = re.compile(r"^[a-z0-9][a-z0-9_.\-@]{1,127}$")
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")
_BAD_LOGIN = "the username or password is wrong"
_hasher = PasswordHasher()
_DUMMY = _hasher.hash("a password nobody has, for equal work on unknown users")


class AttemptLimiter:
    """At most `limit` failures per key within `window_ms`; thread-safe, per process."""

    def __init__(self, clock: Clock, limit: int = 5, window_ms: int = 15 * 60_000) -> None:
        self.clock = clock
        self.limit = limit
        self.window_ms = window_ms
        self._failures: dict[str, deque[int]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: int) -> deque[int]:
        found = self._failures.setdefault(key, deque())
        while found and found[0] <= now - self.window_ms:
            found.popleft()
        return found

    def check(self, keys: Iterable[str]) -> None:
        """Raise `AuthError` when any key has used up its failures."""
        now = self.clock.now_ms()
        with self._lock:
            for key in keys:
                recent = self._recent(key, now)
                if len(recent) >= self.limit:
                    wait = (recent[0] + self.window_ms - now) // 1000 + 1
                    raise AuthError(f"too many failed attempts; try again in {wait} s")

    def fail(self, keys: Iterable[str]) -> None:
        """Record a failure against each key."""
        now = self.clock.now_ms()
        with self._lock:
            for key in keys:
                self._recent(key, now).append(now)

    def clear(self, key: str) -> None:
        """Forget the failures of `key` (after a success)."""
        with self._lock:
            self._failures.pop(key, None)


@dataclass(frozen=True)
class User:
    """A user, without the password hash."""

    id: int
    username: str
    email: str | None
    name: str
    roles: tuple[str, ...]
    status: str
    created_at: int
    last_login_at: int | None

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"id": self.id, "username": self.username, "email": self.email,
                "name": self.name, "roles": list(self.roles), "status": self.status,
                "created_at": self.created_at, "last_login_at": self.last_login_at}


@dataclass(frozen=True)
class Session:
    """A signed-in user's session; `token` is only set when it is created."""

    user: User
    principal: Principal
    expires_at: int
    token: str = ""


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _user(row: Any) -> User:
    return User(row.id, row.username, row.email, row.name, tuple(row.roles or ()), row.status,
                row.created_at, row.last_login_at)


def check_password(password: Any, where: str = "password") -> str:
    """A password long enough to resist guessing and short enough to hash."""
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise ValidationFailed(where, f"must be at least {MIN_PASSWORD} characters; a "
                                      "passphrase of several words is easiest")
    if len(password) > MAX_PASSWORD:
        raise ValidationFailed(where, f"must be at most {MAX_PASSWORD} characters")
    return password


class UserService:
    """Users, roles, sessions and resets, over the store."""

    def __init__(self, store: Store, clock: Clock, limiter: AttemptLimiter | None = None) -> None:
        self.store = store
        self.clock = clock
        self.limiter = limiter or AttemptLimiter(clock)

    # --- roles -------------------------------------------------------------------------------

    def custom_roles(self, conn: Connection) -> dict[str, list[str]]:
        """Custom roles and their permission patterns."""
        return {row.key: list(row.permissions or ())
                for row in conn.execute(sa.select(r.c.key, r.c.permissions))}

    def save_role(self, key: str, name: str, permissions: Sequence[str]) -> None:
        """Create or replace a custom role."""
        check_role_key(key)
        if key in BUILTIN_ROLES:
            raise Conflict(f"role {key!r} is built in and cannot be changed; create a custom "
                           "role with another key")
        if not permissions:
            raise ValidationFailed("permissions", "give at least one permission, e.g. "
                                                  "journey.read")
        checked = sorted({check_permission_pattern(p, f"permissions.{i}")
                          for i, p in enumerate(permissions)})
        now = self.clock.now_ms()
        with self.store.begin() as conn:
            exists = conn.execute(sa.select(r.c.key).where(r.c.key == key)).first()
            if exists:
                conn.execute(r.update().where(r.c.key == key).values(
                    name=name, permissions=checked, updated_at=now))
            else:
                conn.execute(r.insert().values(key=key, name=name, permissions=checked,
                                               created_at=now, updated_at=now))

    def _check_roles(self, conn: Connection, roles: Sequence[str]) -> tuple[str, ...]:
        known = set(BUILTIN_ROLES) | set(self.custom_roles(conn))
        for i, role in enumerate(roles):
            if role not in known:
                raise ValidationFailed(f"roles.{i}", f"{role!r} is not a role; use one of "
                                                     f"{', '.join(sorted(known))}")
        if not roles:
            raise ValidationFailed("roles", "give at least one role, e.g. viewer")
        return tuple(dict.fromkeys(roles))

    # --- users -------------------------------------------------------------------------------

    def create_user(self, username: str, password: str, roles: Sequence[str], *,
                    email: str | None = None, name: str = "") -> User:
        """Create a user (usernames are lower-case; emails unique)."""
        if not isinstance(username, str) or not _USERNAME.match(username):
            raise ValidationFailed("username", "use 2-128 lower-case letters, digits, or "
                                               "'.', '-', '_', '@'")
        if email is not None and not _EMAIL.match(email):
            raise ValidationFailed("email", "is not an email address")
        check_password(password)
        digest = _hasher.hash(password)
        now = self.clock.now_ms()
        with self.store.begin() as conn:
            checked = self._check_roles(conn, roles)
            taken = conn.execute(sa.select(u.c.id).where(
                sa.or_(u.c.username == username, u.c.email == email) if email
                else u.c.username == username)).first()
            if taken:
                raise Conflict("that username or email is already in use")
            uid = conn.execute(u.insert().values(
                username=username, email=email, name=name, password_hash=digest,
                roles=list(checked), status="active", created_at=now, updated_at=now
            ).returning(u.c.id)).scalar_one()
            return _user(conn.execute(sa.select(u).where(u.c.id == uid)).one())

    def get(self, username: str) -> User:
        """One user by username."""
        with self.store.read() as conn:
            row = conn.execute(sa.select(u).where(u.c.username == username)).first()
        if row is None:
            raise NotFound("user", username)
        return _user(row)

    def users(self) -> list[User]:
        """Every user, by username."""
        with self.store.read() as conn:
            return [_user(row) for row in conn.execute(sa.select(u).order_by(u.c.username))]

    def set_roles(self, username: str, roles: Sequence[str]) -> User:
        """Replace a user's roles."""
        with self.store.begin() as conn:
            checked = self._check_roles(conn, roles)
            done = conn.execute(u.update().where(u.c.username == username).values(
                roles=list(checked), updated_at=self.clock.now_ms())).rowcount
        if not done:
            raise NotFound("user", username)
        return self.get(username)

    def set_status(self, username: str, status: str) -> User:
        """Disable or re-enable a user; disabling ends their sessions."""
        if status not in ("active", "disabled"):
            raise ValidationFailed("status", "must be 'active' or 'disabled'")
        now = self.clock.now_ms()
        with self.store.begin() as conn:
            row = conn.execute(sa.select(u.c.id).where(u.c.username == username)).first()
            if row is None:
                raise NotFound("user", username)
            conn.execute(u.update().where(u.c.id == row.id).values(status=status,
                                                                  updated_at=now))
            if status == "disabled":
                conn.execute(s.update().where(s.c.user_id == row.id, s.c.revoked_at.is_(None))
                             .values(revoked_at=now))
        return self.get(username)

    def principal(self, conn: Connection, user: User) -> Principal:
        """What `user` may do."""
        granted = role_permissions(user.roles, self.custom_roles(conn))
        return Principal("user", user.username, granted, user.id)

    # --- sign-in and sessions ----------------------------------------------------------------

    def sign_in(self, username: str, password: str, client: str = "") -> Session:
        """Check the password; a new session (its token shown once). The same error for an
        unknown user, a wrong password and a disabled account."""
        keys = [f"user:{str(username).lower()[:128]}"] + ([f"ip:{client}"] if client else [])
        self.limiter.check(keys)
        with self.store.read() as conn:
            row = conn.execute(sa.select(u).where(u.c.username == str(username).lower())
                               ).first()
        stored = row.password_hash if row is not None else _DUMMY
        try:
            _hasher.verify(stored, str(password)[:MAX_PASSWORD])
            good = row is not None and row.status == "active"
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            good = False
        if not good or row is None:
            self.limiter.fail(keys)
            raise AuthError(_BAD_LOGIN)
        self.limiter.clear(keys[0])
        token = secrets.token_urlsafe(32)
        now = self.clock.now_ms()
        with self.store.begin() as conn:
            conn.execute(s.insert().values(token_hash=_token_hash(token), user_id=row.id,
                                           created_at=now, expires_at=now + SESSION_MS,
                                           last_seen_at=now))
            updates: dict[str, Any] = {"last_login_at": now}
            if _hasher.check_needs_rehash(row.password_hash):
                updates["password_hash"] = _hasher.hash(str(password))
            conn.execute(u.update().where(u.c.id == row.id).values(**updates))
            user = _user(conn.execute(sa.select(u).where(u.c.id == row.id)).one())
            return Session(user, self.principal(conn, user), now + SESSION_MS, token)

    def session(self, token: str) -> Session:
        """The live session of `token`, or `AuthError`."""
        now = self.clock.now_ms()
        with self.store.read() as conn:
            row = conn.execute(
                sa.select(s.c.user_id, s.c.expires_at).where(
                    s.c.token_hash == _token_hash(token), s.c.revoked_at.is_(None),
                    s.c.expires_at > now)).first()
            if row is None:
                raise AuthError("the session has ended; sign in again")
            found = conn.execute(sa.select(u).where(u.c.id == row.user_id,
                                                    u.c.status == "active")).first()
            if found is None:
                raise AuthError("the session has ended; sign in again")
            user = _user(found)
            return Session(user, self.principal(conn, user), row.expires_at)

    def sign_out(self, token: str) -> None:
        """End a session (a no-op for an unknown token)."""
        with self.store.begin() as conn:
            conn.execute(s.update().where(s.c.token_hash == _token_hash(token))
                         .values(revoked_at=self.clock.now_ms()))

    # --- password reset ----------------------------------------------------------------------

    def request_reset(self, email: str) -> str | None:
        """A reset token for the account with `email` (None when there is none). The caller
        mails it and answers the same thing either way."""
        with self.store.read() as conn:
            row = conn.execute(sa.select(u.c.id).where(u.c.email == str(email).lower(),
                                                       u.c.status == "active")).first()
        if row is None:
            return None
        token = secrets.token_urlsafe(32)
        now = self.clock.now_ms()
        with self.store.begin() as conn:
            conn.execute(pr.insert().values(token_hash=_token_hash(token), user_id=row.id,
                                            created_at=now, expires_at=now + RESET_MS))
        return token

    def reset_password(self, token: str, password: str) -> None:
        """Set a new password with a reset token (once); every session of the user ends."""
        check_password(password)
        now = self.clock.now_ms()
        with self.store.begin() as conn:
            row = conn.execute(sa.select(pr.c.user_id).where(
                pr.c.token_hash == _token_hash(str(token)), pr.c.used_at.is_(None),
                pr.c.expires_at > now)).first()
            if row is None:
                raise AuthError("the reset link is not valid any more; ask for a new one")
            conn.execute(pr.update().where(pr.c.token_hash == _token_hash(str(token)))
                         .values(used_at=now))
            conn.execute(u.update().where(u.c.id == row.user_id).values(
                password_hash=_hasher.hash(password), updated_at=now))
            conn.execute(s.update().where(s.c.user_id == row.user_id, s.c.revoked_at.is_(None))
                         .values(revoked_at=now))

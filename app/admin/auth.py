"""Admin accounts: argon2id password hashes (never plain text), account creation, server-side
sessions, CSRF tokens, login throttling and the audit log."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core.schema import AdminSession, AdminUser, AuditLog, RateLimit, utcnow

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def validate_password(password: str) -> None:
    if len(password) < 10:
        raise ValueError("passwords need at least 10 characters")


def create_admin(session: Session, username: str, password: str) -> AdminUser:
    """Add an admin (caller commits). Raises ValueError for a taken name or a weak password."""
    username = username.strip()
    if not username or len(username) > 100:
        raise ValueError("usernames have 1 to 100 characters")
    validate_password(password)
    if session.scalar(sa.select(AdminUser.id).where(AdminUser.username == username)) is not None:
        raise ValueError(f"an admin named {username!r} already exists")
    user = AdminUser(username=username, password_hash=hash_password(password))
    session.add(user)
    session.flush()
    return user


def random_password() -> str:
    return secrets.token_urlsafe(12)


# ------------------------------------------------------------------------------------------
# Admin sessions, CSRF and login throttling.
#
# Everything lives in the database (AdminSession, RateLimit, AdminUser), because app processes
# are stateless: a login on one worker must be valid on every other, and a lockout must hold
# whichever worker the next guess reaches.

SESSION_COOKIE = "mm_admin"
LOGIN_CSRF_COOKIE = "mm_login"
# An admin session ends this long after login, whatever happens (hours).
SESSION_HOURS = 12
# Failed logins per username (any address) before that username is locked for the window.
USER_FAILURE_LIMIT = 5
# Failed logins per client address (any username) before that address is locked for the window.
IP_FAILURE_LIMIT = 20
# Fixed window of the failure counters, and so the lock duration (minutes).
FAILURE_WINDOW_MINUTES = 15

# Verifying against this hash when the username does not exist keeps the timing of "no such
# user" and "wrong password" alike, so response times do not reveal which usernames exist.
_DUMMY_HASH = _hasher.hash("not-a-real-password-" + secrets.token_hex(8))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def tokens_match(expected: str | None, supplied: str | None) -> bool:
    """Constant-time comparison of a CSRF token; a missing value never matches."""
    if not expected or not supplied:
        return False
    return hmac.compare_digest(expected.encode(), supplied.encode())


def start_session(session: Session, user: AdminUser, now: dt.datetime | None = None) -> tuple[str, AdminSession]:
    """Create a server-side session (caller commits); return the cookie value and the row.

    Only the token's sha256 is stored, so a leaked database does not hand out live sessions.
    Each login gets a fresh token (no session fixation).
    """
    now = now or utcnow()
    token = secrets.token_urlsafe(32)
    row = AdminSession(
        token_hash=_digest(token),
        user_id=user.id,
        csrf_token=new_csrf_token(),
        created_at=now,
        expires_at=now + dt.timedelta(hours=SESSION_HOURS),
    )
    session.add(row)
    user.last_login_at = now
    # Housekeeping: expired sessions are useless; drop them while we are writing anyway.
    session.execute(sa.delete(AdminSession).where(AdminSession.expires_at < now))
    session.flush()
    return token, row


def session_for_token(session: Session, token: str | None, now: dt.datetime | None = None) -> AdminSession | None:
    """The live session behind a cookie value, or None (unknown, logged out or expired)."""
    if not token or len(token) > 200:
        return None
    row = session.scalar(sa.select(AdminSession).where(AdminSession.token_hash == _digest(token)))
    if row is None or row.expires_at <= (now or utcnow()):
        return None
    return row


def end_admin_session(session: Session, token: str | None) -> None:
    """Log out: delete the session row so the cookie is dead everywhere (caller commits)."""
    if token:
        session.execute(sa.delete(AdminSession).where(AdminSession.token_hash == _digest(token)))


def _user_key(username: str) -> str:
    return "login:user:" + username.strip().lower()[:150]


def _ip_key(ip: str) -> str:
    return "login:ip:" + (ip or "unknown")[:150]


def _window() -> dt.timedelta:
    return dt.timedelta(minutes=FAILURE_WINDOW_MINUTES)


def _locked_until(session: Session, key: str, limit: int, now: dt.datetime) -> dt.datetime | None:
    row = session.get(RateLimit, key)
    if row is None or row.count < limit:
        return None
    until = row.window_start + _window()
    return until if until > now else None


def login_locked_until(session: Session, username: str, ip: str, now: dt.datetime | None = None) -> dt.datetime | None:
    """When the username or the address may try again, or None if neither is locked."""
    now = now or utcnow()
    times = [
        t
        for t in (
            _locked_until(session, _user_key(username), USER_FAILURE_LIMIT, now),
            _locked_until(session, _ip_key(ip), IP_FAILURE_LIMIT, now),
        )
        if t is not None
    ]
    return max(times) if times else None


def _bump(session: Session, key: str, now: dt.datetime) -> int:
    """Count one failure in ``key``'s fixed window; returns the count. Safe under concurrency:
    the row is locked (PostgreSQL) or the transaction holds the write lock (SQLite, BEGIN
    IMMEDIATE); a concurrent first insert is retried as an update."""
    for _ in range(3):
        row = session.scalar(sa.select(RateLimit).where(RateLimit.key == key).with_for_update())
        if row is None:
            try:
                with session.begin_nested():
                    session.add(RateLimit(key=key, window_start=now, count=1))
                return 1
            except IntegrityError:
                continue
        if now - row.window_start >= _window():
            row.window_start = now
            row.count = 1
        else:
            row.count += 1
        session.flush()
        return row.count
    raise RuntimeError("could not update the login failure counter")


def record_login_failure(session: Session, username: str, ip: str, now: dt.datetime | None = None) -> None:
    """Count a failed login against the username and the address (caller commits)."""
    now = now or utcnow()
    n_user = _bump(session, _user_key(username), now)
    _bump(session, _ip_key(ip), now)
    user = session.scalar(sa.select(AdminUser).where(AdminUser.username == username.strip()))
    if user is not None:
        user.failed_logins = (user.failed_logins or 0) + 1
        if n_user >= USER_FAILURE_LIMIT:
            user.locked_until = now + _window()


def clear_login_failures(session: Session, user: AdminUser) -> None:
    """After a successful login or a password reset, the username's counter starts again."""
    session.execute(sa.delete(RateLimit).where(RateLimit.key == _user_key(user.username)))
    user.failed_logins = 0
    user.locked_until = None


@dataclass
class LoginResult:
    """``user`` on success; otherwise ``locked_until`` when throttled, or neither for bad credentials."""

    user: AdminUser | None = None
    locked_until: dt.datetime | None = None


def attempt_login(session: Session, username: str, password: str, ip: str, now: dt.datetime | None = None) -> LoginResult:
    """Check credentials with throttling (caller commits). While locked, even the right password
    is refused, so guessing cannot continue at full speed."""
    now = now or utcnow()
    until = login_locked_until(session, username, ip, now)
    if until is not None:
        return LoginResult(locked_until=until)
    user = session.scalar(sa.select(AdminUser).where(AdminUser.username == username.strip())) if username.strip() else None
    ok = verify_password(user.password_hash if user else _DUMMY_HASH, password) and user is not None
    if not ok:
        record_login_failure(session, username, ip, now)
        return LoginResult(locked_until=login_locked_until(session, username, ip, now))
    assert user is not None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    clear_login_failures(session, user)
    return LoginResult(user=user)


def set_password(session: Session, username: str, password: str) -> AdminUser:
    """Reset an admin's password (caller commits); also lifts a lockout and ends their sessions."""
    validate_password(password)
    user = session.scalar(sa.select(AdminUser).where(AdminUser.username == username.strip()))
    if user is None:
        raise ValueError(f"no admin named {username!r}")
    user.password_hash = hash_password(password)
    clear_login_failures(session, user)
    session.execute(sa.delete(AdminSession).where(AdminSession.user_id == user.id))
    session.flush()
    return user


def audit(session: Session, user: AdminUser | None, action: str, target: str | None = None, **details: Any) -> None:
    """Record an admin action (caller commits, in the same transaction as the action)."""
    session.add(
        AuditLog(
            admin_user_id=user.id if user is not None else None,
            action=action[:100],
            target=(target or None) and target[:200],
            details=details or None,
        )
    )

"""Admin accounts: argon2id password hashes (never plain text), and account creation."""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.orm import Session

from app.models import AdminUser

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

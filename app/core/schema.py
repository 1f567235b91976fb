"""Database schema (SQLAlchemy 2.0 typed mappings). Alembic migrations in ``migrations/`` mirror it.

Conventions:
* all times are timezone-aware UTC (:class:`UTCDateTime` keeps that true on SQLite too);
* uniqueness that matters for data integrity is a database constraint, never an application check
  alone: one response per (participant, trial), one balancing slot per (experiment, slot), one
  attempt per platform id;
* responses and screening trials are insert-only.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy import JSON, BigInteger, Boolean, Float, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite stores naive values)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: sa.Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime; use timezone-aware UTC")
        value = value.astimezone(dt.timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: dt.datetime | None, dialect: sa.Dialect) -> dt.datetime | None:
        return as_utc(value)


def as_utc(value: dt.datetime | None) -> dt.datetime | None:
    """A stored datetime as the app reads it: aware UTC (SQLite's naive values are UTC)."""
    if value is None:
        return None
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)


NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING)
    type_annotation_map = {dt.datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class StimulusSet(Base):
    """An imported bank. ``manifest`` keeps the bank's manifest minus its stimuli (they are rows)."""

    __tablename__ = "stimulus_sets"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    modality: Mapped[str] = mapped_column(String(10))
    bank_format: Mapped[str] = mapped_column(String(40))
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON)
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    n_stimuli: Mapped[int] = mapped_column(Integer)
    imported_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    imported_by: Mapped[str | None] = mapped_column(String(200))

    stimuli: Mapped[list[Stimulus]] = relationship(back_populates="stimulus_set", cascade="all, delete-orphan", passive_deletes=True)


class Stimulus(Base):
    """One media file of a stimulus set, stored under ``media/<sha[:2]>/<sha><ext>``."""

    __tablename__ = "stimuli"
    __table_args__ = (UniqueConstraint("set_id", "key"), sa.Index("ix_stimuli_set_kind", "set_id", "kind"))

    id: Mapped[int] = mapped_column(primary_key=True)
    set_id: Mapped[int] = mapped_column(ForeignKey("stimulus_sets.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    source: Mapped[str | None] = mapped_column(String(200))
    label: Mapped[str] = mapped_column(String(64))
    model: Mapped[str | None] = mapped_column(String(200))
    layer: Mapped[str | None] = mapped_column(String(200))
    layer_index: Mapped[int | None] = mapped_column(Integer)
    passed: Mapped[bool | None] = mapped_column(Boolean)
    fail_reasons: Mapped[list[Any] | None] = mapped_column(JSON)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    media_sha256: Mapped[str] = mapped_column(String(64))
    media_ext: Mapped[str] = mapped_column(String(8))
    media_bytes: Mapped[int] = mapped_column(Integer)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    channels: Mapped[int | None] = mapped_column(Integer)
    sample_rate: Mapped[int | None] = mapped_column(Integer)
    frames: Mapped[int | None] = mapped_column(Integer)

    stimulus_set: Mapped[StimulusSet] = relationship(back_populates="stimuli")

    @property
    def media_name(self) -> str:
        return f"{self.media_sha256}{self.media_ext}"


class Experiment(Base):
    """An experiment: its validated spec (``app.experiments.spec.ExperimentSpec`` as JSON) and lifecycle status."""

    __tablename__ = "experiments"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    title: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="draft")  # draft | active | paused | closed
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Fixes the experiment-level source order of the Latin square; set once at creation.
    design_seed: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    activated_at: Mapped[dt.datetime | None]
    closed_at: Mapped[dt.datetime | None]

    stimulus_sets: Mapped[list[StimulusSet]] = relationship(secondary="experiment_stimulus_sets", order_by="StimulusSet.id")


class ExperimentStimulusSet(Base):
    """Which sets an experiment draws from. RESTRICT: a set in use cannot be deleted."""

    __tablename__ = "experiment_stimulus_sets"

    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"), primary_key=True)
    stimulus_set_id: Mapped[int] = mapped_column(ForeignKey("stimulus_sets.id", ondelete="RESTRICT"), primary_key=True)


class Participant(Base):
    """One attempt by one person at one experiment.

    ``slot`` is the balancing slot the participant occupies while they count (started or completed);
    it is cleared when they are screened out, return or abandon, so a newcomer takes the same
    Latin-square row. ``plan_slot`` is the slot their trial plan was built from and never changes.
    """

    __tablename__ = "participants"
    __table_args__ = (
        UniqueConstraint("experiment_id", "slot"),
        UniqueConstraint("experiment_id", "platform", "platform_pid", "attempt"),
        sa.Index("ix_participants_experiment_status", "experiment_id", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    experiment_id: Mapped[int] = mapped_column(ForeignKey("experiments.id", ondelete="CASCADE"))
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    token_salt: Mapped[str] = mapped_column(String(32))
    platform: Mapped[str] = mapped_column(String(16))  # prolific | mturk | none
    platform_pid: Mapped[str | None] = mapped_column(String(128))
    study_id: Mapped[str | None] = mapped_column(String(128))
    session_id: Mapped[str | None] = mapped_column(String(128))
    assignment_id: Mapped[str | None] = mapped_column(String(128))
    hit_id: Mapped[str | None] = mapped_column(String(128))
    turk_submit_to: Mapped[str | None] = mapped_column(String(512))
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(20), default="started")  # started | screened_out | completed | returned | abandoned
    outcome: Mapped[str | None] = mapped_column(String(20))  # completed | screened_out | failed_attention
    slot: Mapped[int | None] = mapped_column(Integer)
    plan_slot: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    consent_at: Mapped[dt.datetime | None]
    instructions_at: Mapped[dt.datetime | None]
    completed_at: Mapped[dt.datetime | None]
    ended_at: Mapped[dt.datetime | None]
    last_seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    user_agent: Mapped[str | None] = mapped_column(String(512))
    browser: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    screen_reason: Mapped[str | None] = mapped_column(String(200))
    headphone_passed: Mapped[bool | None] = mapped_column(Boolean)
    headphone_score: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    excluded: Mapped[bool] = mapped_column(Boolean, default=False)
    exclude_reason: Mapped[str | None] = mapped_column(String(500))

    experiment: Mapped[Experiment] = relationship()
    trials: Mapped[list[Trial]] = relationship(back_populates="participant", order_by="Trial.index", cascade="all, delete-orphan", passive_deletes=True)


class Trial(Base):
    """One planned trial, fixed at plan time. ``phase``: practice | gate | main | catch."""

    __tablename__ = "trials"
    __table_args__ = (UniqueConstraint("participant_id", "index"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    participant_id: Mapped[int] = mapped_column(ForeignKey("participants.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    phase: Mapped[str] = mapped_column(String(10))
    block: Mapped[int] = mapped_column(Integer, default=0)
    stimulus_id: Mapped[int] = mapped_column(ForeignKey("stimuli.id"))
    condition: Mapped[str | None] = mapped_column(String(400))  # "natural" or "model/layer"; None off the main phase
    model: Mapped[str | None] = mapped_column(String(200))
    layer: Mapped[str | None] = mapped_column(String(200))
    layer_index: Mapped[int | None] = mapped_column(Integer)
    source: Mapped[str | None] = mapped_column(String(400))
    label: Mapped[str] = mapped_column(String(64))
    swapped: Mapped[bool] = mapped_column(Boolean, default=False)
    swap_reason: Mapped[str | None] = mapped_column(String(500))
    planned_stimulus_id: Mapped[int | None] = mapped_column(ForeignKey("stimuli.id"))

    participant: Mapped[Participant] = relationship(back_populates="trials")
    stimulus: Mapped[Stimulus] = relationship(foreign_keys=[stimulus_id])
    response: Mapped[Response | None] = relationship(back_populates="trial", uselist=False)


class Response(Base):
    """One answered trial. Insert-only; ``payload_sha256`` makes retries idempotent."""

    __tablename__ = "responses"
    __table_args__ = (UniqueConstraint("participant_id", "trial_index"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    participant_id: Mapped[int] = mapped_column(ForeignKey("participants.id", ondelete="CASCADE"))
    trial_id: Mapped[int] = mapped_column(ForeignKey("trials.id", ondelete="CASCADE"), unique=True)
    trial_index: Mapped[int] = mapped_column(Integer)
    answer: Mapped[str] = mapped_column(String(200))
    correct: Mapped[bool] = mapped_column(Boolean)
    rt_ms: Mapped[float | None] = mapped_column(Float)
    shown_at: Mapped[dt.datetime | None]  # client clock
    responded_at: Mapped[dt.datetime | None]  # client clock
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)  # server clock
    durations: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # measured on-screen ms
    events: Mapped[list[Any] | None] = mapped_column(JSON)  # focus/blur etc.
    client: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    payload_sha256: Mapped[str] = mapped_column(String(64))

    trial: Mapped[Trial] = relationship(back_populates="response")


class ScreeningTrial(Base):
    """One headphone-check trial answer. Insert-only, unique per (participant, check, attempt, index)."""

    __tablename__ = "screening_trials"
    __table_args__ = (UniqueConstraint("participant_id", "check", "attempt", "index"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    participant_id: Mapped[int] = mapped_column(ForeignKey("participants.id", ondelete="CASCADE"))
    check: Mapped[str] = mapped_column(String(16))  # antiphase | huggins
    attempt: Mapped[int] = mapped_column(Integer)
    index: Mapped[int] = mapped_column(Integer)
    stimulus: Mapped[str] = mapped_column(String(200))
    correct_answer: Mapped[int] = mapped_column(Integer)
    answer: Mapped[int] = mapped_column(Integer)
    correct: Mapped[bool] = mapped_column(Boolean)
    rt_ms: Mapped[float | None] = mapped_column(Float)
    events: Mapped[list[Any] | None] = mapped_column(JSON)
    payload_sha256: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ParticipantEvent(Base):
    """Things the browser reports that are not answers: media load failures, visibility changes."""

    __tablename__ = "participant_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    participant_id: Mapped[int] = mapped_column(ForeignKey("participants.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    trial_index: Mapped[int | None] = mapped_column(Integer)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AdminUser(Base):
    __tablename__ = "admin_users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))  # argon2id
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_login_at: Mapped[dt.datetime | None]
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[dt.datetime | None]


class AdminSession(Base):
    """Server-side admin sessions, so logout and expiry really end them."""

    __tablename__ = "admin_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("admin_users.id", ondelete="CASCADE"))
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]

    user: Mapped[AdminUser] = relationship()


class AuditLog(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    admin_user_id: Mapped[int | None] = mapped_column(ForeignKey("admin_users.id", ondelete="SET NULL"))
    action: Mapped[str] = mapped_column(String(100))
    target: Mapped[str | None] = mapped_column(String(200))
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class RateLimit(Base):
    """Fixed-window counters shared by all app processes (login and participant-creation limits)."""

    __tablename__ = "rate_limits"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    window_start: Mapped[dt.datetime]
    count: Mapped[int] = mapped_column(Integer, default=0)


# Participants in these statuses hold a balancing slot.
COUNTING_STATUSES = ("started", "completed")
# The platform of researcher previews (``app.participation.preview``): never counted, never exported.
PREVIEW_PLATFORM = "preview"
# SQL condition selecting the participants that count (everything but previews).
REAL = Participant.platform != PREVIEW_PLATFORM

"""The schema is defined once in app/core/schema.py and changed only by migrations: they must agree."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from app.core.db import NotMigratedError, check_migrated, head_revision, make_engine
from app.core.schema import Base
from app.core.settings import Settings
from app.main import create_app


def test_migrations_produce_exactly_the_models(db_url: str) -> None:
    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(ctx, Base.metadata)
    engine.dispose()
    assert diff == [], f"models and migrations differ: {diff}"


def test_migrated_database_is_at_head(settings: Settings) -> None:
    engine = make_engine(settings)
    check_migrated(engine)  # does not raise
    with engine.connect() as conn:
        assert conn.scalar(sa.text("SELECT version_num FROM alembic_version")) == head_revision()
    engine.dispose()


def test_app_refuses_to_start_on_an_unmigrated_database(tmp_path) -> None:
    settings = Settings(var_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'empty.db'}", secret_key="k")
    with pytest.raises(NotMigratedError, match="Run `metamers db upgrade`"):
        create_app(settings)

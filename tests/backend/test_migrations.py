"""The schema only changes through migrations: they build it from empty and match the models exactly."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from backend import db
from backend.models import Base


@pytest.fixture(params=["sqlite", "postgres"])
def empty_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    return request.getfixturevalue("postgres_server").new_database("slimpipe_migrate")


def test_upgrade_from_empty_builds_the_models_schema(empty_url):
    db.migrate(empty_url)
    engine = create_engine(empty_url)
    try:
        inspector = inspect(engine)
        assert {"experiments", "runs", "metric_points", "log_lines", "alembic_version"} <= set(inspector.get_table_names())
        indexes = {i["name"]: i["column_names"] for i in inspector.get_indexes("metric_points")}
        assert indexes["ix_metric_points_run_name_step"] == ["run_id", "name", "step"]
        with engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert diff == [], f"models and migrations disagree; write a migration: {diff}"
        db.migrate(empty_url)  # idempotent: serve runs it on every start
    finally:
        engine.dispose()


def test_downgrade_to_base_and_up_again(empty_url):
    from alembic import command

    db.migrate(empty_url)
    command.downgrade(db.alembic_config(empty_url), "base")
    engine = create_engine(empty_url)
    try:
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()
    db.migrate(empty_url)

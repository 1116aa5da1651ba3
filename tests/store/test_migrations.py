"""The migration chain: up to head and down to base on both dialects, matching the schema."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from cadenza.store import Store
from cadenza.store.migrate import alembic_config, current, downgrade, upgrade
from cadenza.store.schema import metadata


def scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config("sqlite://"))


def chain() -> list[str]:
    """Every revision id, oldest first."""
    script = scripts()
    return [rev.revision for rev in reversed(list(script.walk_revisions()))]


def table_names(url: str) -> set[str]:
    store = Store.create(url)
    try:
        return set(sa.inspect(store.engine).get_table_names())
    finally:
        store.dispose()


def schema_diff(url: str) -> list[Any]:
    """What Alembic's autogenerate would change to make the database match `metadata`."""
    store = Store.create(url)
    try:
        with store.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, metadata))
    finally:
        store.dispose()


def test_chain_is_linear_and_non_empty() -> None:
    script = scripts()
    assert len(script.get_heads()) == 1, "migrations must form one linear chain"
    assert len(script.get_bases()) == 1
    assert chain()


def test_upgrade_to_head_and_downgrade_to_base(empty_store_url: str) -> None:
    url = empty_store_url
    revisions = chain()
    assert current(url) is None

    upgrade(url)
    assert current(url) == revisions[-1]
    assert table_names(url) == set(metadata.tables) | {"alembic_version"}
    assert schema_diff(url) == []

    downgrade(url, "base")
    assert current(url) is None
    assert table_names(url) <= {"alembic_version"}

    # The chain replays after a full downgrade and lands on the same schema.
    upgrade(url)
    assert current(url) == revisions[-1]
    assert schema_diff(url) == []


def test_each_revision_steps_up_and_down(empty_store_url: str) -> None:
    url = empty_store_url
    revisions = chain()
    for revision in revisions:
        upgrade(url, revision)
        assert current(url) == revision
    for below in [*reversed(revisions[:-1]), None]:
        downgrade(url, below or "base")
        assert current(url) == below
    assert table_names(url) <= {"alembic_version"}


def test_migrated_test_database_matches_schema_module(store_url: str) -> None:
    # The database every other test runs on, whichever dialect.
    assert schema_diff(store_url) == []


def test_schema_diff_sees_a_missing_index(empty_store_url: str) -> None:
    # Guards the comparison itself: a database that lacks an index must not compare equal.
    upgrade(empty_store_url)
    store = Store.create(empty_store_url)
    try:
        with store.begin() as conn:
            conn.execute(sa.text("DROP INDEX ix_import_errors_import_id"))
    finally:
        store.dispose()
    diff = schema_diff(empty_store_url)
    assert [entry[0] for entry in diff] == ["add_index"]

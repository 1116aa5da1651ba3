"""The throwaway PostgreSQL cluster behind the switch (these run only with it on)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from cadenza.store import Store, schema
from cadenza.store.migrate import current
from tests.pgcluster import PgCluster

pytestmark = pytest.mark.postgres


def test_store_runs_on_the_throwaway_cluster(store: Store, dialect: str) -> None:
    assert dialect == "postgres"  # a postgres-marked test is not run on SQLite
    assert store.dialect == "postgresql"
    with store.read() as conn:
        version = int(conn.exec_driver_sql("SHOW server_version_num").scalar_one())
        fsync = conn.exec_driver_sql("SHOW fsync").scalar_one()
    assert version >= 150000
    assert fsync == "off"


def test_each_copy_of_the_template_is_migrated_and_independent(
    pg_cluster: PgCluster, pg_template: str
) -> None:
    names = [pg_cluster.create_database(template=pg_template) for _ in range(2)]
    stores = [Store.create(pg_cluster.url(name)) for name in names]
    try:
        head = current(pg_cluster.url(names[0]))
        assert head is not None
        assert current(pg_cluster.url(names[1])) == head
        with stores[0].begin() as conn:
            conn.execute(
                sa.insert(schema.contacts).values(
                    email="only@first.example", attributes={}, created_at=1, updated_at=1
                )
            )
        counts = []
        for store in stores:
            with store.read() as conn:
                query = sa.select(sa.func.count()).select_from(schema.contacts)
                counts.append(conn.execute(query).scalar_one())
        assert counts == [1, 0]
    finally:
        for store in stores:
            store.dispose()
        for name in names:
            pg_cluster.drop_database(name)
    admin = Store.create(pg_cluster.url("postgres"))
    try:
        with admin.read() as conn:
            left = conn.execute(
                sa.text("SELECT datname FROM pg_database WHERE datname = ANY(:names)"),
                {"names": names},
            ).all()
    finally:
        admin.dispose()
    assert left == []

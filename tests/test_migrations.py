"""The Alembic migrations build exactly the schema the models describe."""
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from workbench.db import Base
from workbench.model_modules import import_all, include_name


def test_migrations_match_models(vault):
    import_all()
    with vault.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(
            conn, opts={"include_name": include_name}), Base.metadata)
    assert diff == [], f"models and migrations differ (generate a migration): {diff}"

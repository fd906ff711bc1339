"""Put back the case-insensitive name index that 0010's table copy dropped on SQLite.

SQLite's batch mode copies a table to add a column, and SQLAlchemy cannot reflect an
expression index, so ``ix_credentials_name_ci`` (``lower(name), pk``, issue 20's name sort) was
lost on every SQLite vault migrated through 0010. PostgreSQL kept it: IF NOT EXISTS.

Revision ID: 0016_name_ci_index
Revises: 0014_scope_roles
"""
from alembic import op

revision = '0016_name_ci_index'
down_revision = '0014_scope_roles'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX IF NOT EXISTS ix_credentials_name_ci ON credentials (lower(name), pk)")


def downgrade() -> None:
    pass  # the index belongs to 0012; downgrading past 0012 drops it there

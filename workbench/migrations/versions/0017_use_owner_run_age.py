"""Which scope's credential a run used, and indexes for retention's prune.

``credential_uses.owner`` lets a credential's page list the runs of the scopes below that
inherit it; uses recorded before this were attributed to the run's own scope, so that is what
they get.  ``ix_runs_age`` and ``ix_server_runs_age`` are the ages ``retention.prune`` (run by
the job engine every minute) compares, so a prune no longer reads the whole tables.

Revision ID: 0017_use_owner_run_age
Revises: 0016_name_ci_index
"""
import sqlalchemy as sa
from alembic import op

revision = '0017_use_owner_run_age'
down_revision = '0016_name_ci_index'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('credential_uses', sa.Column('owner', sa.String(length=64), nullable=True))
    op.execute("UPDATE credential_uses SET owner = workspace")
    op.execute("CREATE INDEX ix_runs_age ON runs (coalesce(finished_at, started_at))")
    op.execute("CREATE INDEX ix_server_runs_age ON server_runs (coalesce(closed_at, expires_at))")


def downgrade() -> None:
    op.drop_index('ix_server_runs_age', table_name='server_runs')
    op.drop_index('ix_runs_age', table_name='runs')
    with op.batch_alter_table('credential_uses') as batch:
        batch.drop_column('owner')

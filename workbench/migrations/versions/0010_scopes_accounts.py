"""accounts: users.must_change_password (a generated or admin-set password is changed at the
next sign-in)

Revision ID: 0010_scopes_accounts
Revises: 0005
"""
from alembic import op
import sqlalchemy as sa


revision = '0010_scopes_accounts'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('must_change_password', sa.Boolean(),
                                      server_default=sa.false(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('must_change_password')

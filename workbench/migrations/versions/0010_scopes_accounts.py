"""scopes and accounts: users.must_change_password (a generated or admin-set password is
changed at the next sign-in); workspaces.title (renamed; the ID never changes), created_by

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
    with op.batch_alter_table('workspaces', schema=None) as batch_op:
        batch_op.add_column(sa.Column('title', sa.String(length=200), server_default='',
                                      nullable=False))
        batch_op.add_column(sa.Column('created_by', sa.String(length=100), server_default='',
                                      nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('workspaces', schema=None) as batch_op:
        batch_op.drop_column('created_by')
        batch_op.drop_column('title')
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('must_change_password')

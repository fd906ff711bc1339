"""scopes and accounts: users.must_change_password (a generated or admin-set password is
changed at the next sign-in); workspaces.title (renamed; the ID never changes), created_by,
parent_id (the scope tree); credentials.inherit (seen by the scopes below)

Revision ID: 0010_scopes_accounts
Revises: 0013_sso
"""
from alembic import op
import sqlalchemy as sa


revision = '0010_scopes_accounts'
down_revision = '0013_sso'
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
        # existing workspaces become top-level scopes (no parent): nothing changes for them
        batch_op.add_column(sa.Column('parent_id', sa.Integer(), nullable=True))
        batch_op.create_index('ix_workspaces_parent_id', ['parent_id'], unique=False)
        batch_op.create_foreign_key('fk_workspaces_parent', 'workspaces', ['parent_id'], ['id'])
    with op.batch_alter_table('credentials', schema=None) as batch_op:
        batch_op.add_column(sa.Column('inherit', sa.Boolean(), server_default=sa.true(),
                                      nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('credentials', schema=None) as batch_op:
        batch_op.drop_column('inherit')
    with op.batch_alter_table('workspaces', schema=None) as batch_op:
        batch_op.drop_constraint('fk_workspaces_parent', type_='foreignkey')
        batch_op.drop_index('ix_workspaces_parent_id')
        batch_op.drop_column('parent_id')
        batch_op.drop_column('created_by')
        batch_op.drop_column('title')
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('must_change_password')

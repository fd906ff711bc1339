"""scope_roles: a user's role (admin, editor, viewer, auditor) on one scope and the scopes
below it, granted by hand or by SSO; users.role may now be 'none' (scope grants only)

Revision ID: 0014_scope_roles
Revises: 0010_scopes_accounts
"""
from alembic import op
import sqlalchemy as sa


revision = '0014_scope_roles'
down_revision = '0010_scopes_accounts'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'scope_roles',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('workspace_id', sa.Integer(), nullable=False),
        sa.Column('role', sa.String(length=16), nullable=False),
        sa.Column('source', sa.String(length=8), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('created_by', sa.String(length=100), nullable=False),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['workspace_id'], ['workspaces.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('user_id', 'workspace_id', name='uq_scope_role'),
    )
    op.create_index('ix_scope_roles_workspace', 'scope_roles', ['workspace_id'])


def downgrade() -> None:
    op.drop_index('ix_scope_roles_workspace', table_name='scope_roles')
    op.drop_table('scope_roles')

"""credentials table indexes for sorting and deep pages

Revision ID: 0004
Revises: 0003
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('credentials', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_credentials_created'))
        batch_op.create_index('ix_credentials_created', ['created_at', 'pk'], unique=False)
        batch_op.drop_index(batch_op.f('ix_credentials_type'))
        batch_op.create_index('ix_credentials_type', ['type', 'created_at', 'pk'], unique=False)
        batch_op.create_index('ix_credentials_cred_id', ['cred_id', 'pk'], unique=False)
        batch_op.create_index('ix_credentials_name', ['name', 'pk'], unique=False)
        batch_op.create_index('ix_credentials_status', ['status', 'created_at', 'pk'], unique=False)
        batch_op.create_index('ix_credentials_ws_created', ['workspace_id', 'created_at', 'pk'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('credentials', schema=None) as batch_op:
        batch_op.drop_index('ix_credentials_ws_created')
        batch_op.drop_index('ix_credentials_status')
        batch_op.drop_index('ix_credentials_name')
        batch_op.drop_index('ix_credentials_cred_id')
        batch_op.drop_index('ix_credentials_type')
        batch_op.create_index(batch_op.f('ix_credentials_type'), ['type'], unique=False)
        batch_op.drop_index('ix_credentials_created')
        batch_op.create_index(batch_op.f('ix_credentials_created'), ['created_at'], unique=False)


"""sso_identities: which OpenID Connect account (issuer, subject) a user signed in with

Revision ID: 0013_sso
Revises: 0009_jobs
"""
from alembic import op
import sqlalchemy as sa


revision = '0013_sso'
down_revision = '0009_jobs'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'sso_identities',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('issuer', sa.String(length=255), nullable=False),
        sa.Column('subject', sa.String(length=255), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('last_sign_in_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('issuer', 'subject', name='uq_sso_subject'),
        sa.UniqueConstraint('user_id'),
    )


def downgrade() -> None:
    op.drop_table('sso_identities')

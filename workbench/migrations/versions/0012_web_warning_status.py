"""credentials.status 'Warning' for credentials that work with a caveat; names sort ignoring case

Revision ID: 0012_web
Revises: 0005

Until now an exec plugin, a value too short to mask or a certificate expiring soon showed the
same "Issues found" as an expired certificate.  Stored statuses are recomputed from the stored
conditions: "Issues found" without any failure (a False ``Valid`` or ``Reachable``) becomes
"Warning".  An index on lower(name) keeps the case-insensitive name sort of the credentials
table as fast as the old one.
"""
import json

from alembic import op
import sqlalchemy as sa


revision = '0012_web'
down_revision = '0005'
branch_labels = None
depends_on = None

credentials = sa.table('credentials', sa.column('pk', sa.Integer),
                       sa.column('status', sa.String), sa.column('conditions', sa.JSON))


def _failed(conditions) -> bool:
    conds = json.loads(conditions) if isinstance(conditions, str) else conditions or []
    return any(c.get("type") in ("Valid", "Reachable") and c.get("status") == "False"
               for c in conds)


def upgrade() -> None:
    op.create_index('ix_credentials_name_ci', 'credentials', [sa.text('lower(name)'), 'pk'])
    conn = op.get_bind()
    rows = conn.execute(sa.select(credentials.c.pk, credentials.c.conditions)
                        .where(credentials.c.status == 'Issues found')).all()
    warn = [pk for pk, conds in rows if not _failed(conds)]
    if warn:
        conn.execute(credentials.update().where(credentials.c.pk.in_(warn))
                     .values(status='Warning'))


def downgrade() -> None:
    op.drop_index('ix_credentials_name_ci', table_name='credentials')
    op.execute(credentials.update().where(credentials.c.status == 'Warning')
               .values(status='Issues found'))

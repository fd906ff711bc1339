"""Migration 0012_web: stored "Issues found" that were only warnings become "Warning"."""
import json

import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory

from workbench.vault import alembic_config

WARN_ONLY = [{"type": "Valid", "status": "True", "reason": "ExecPlugin",
              "message": "runs an exec plugin", "last_transition": ""},
             {"type": "Reachable", "status": "Unknown", "reason": "NotTestable",
              "message": "exec plugin", "last_transition": ""}]
FAILED = [{"type": "Valid", "status": "False", "reason": "Expired",
           "message": "expired", "last_transition": ""}]


def test_issues_that_were_warnings_become_warning_and_back(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.db'}"
    cfg = alembic_config(url)
    before = ScriptDirectory.from_config(cfg).get_revision("0012_web").down_revision
    command.upgrade(cfg, before)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO workspaces (id, name, created_at) "
                             "VALUES (1, 'default', CURRENT_TIMESTAMP)"))
        for pk, cid, conds, status in ((1, "eks", WARN_ONLY, "Issues found"),
                                       (2, "old-cert", FAILED, "Issues found"),
                                       (3, "fine", [], "Not tested")):
            conn.execute(sa.text(
                "INSERT INTO credentials (pk, workspace_id, cred_id, name, description, type, "
                "current_version, public, conditions, status, status_message, created_by, "
                "created_at, updated_at) VALUES (:pk, 1, :cid, :cid, '', 'kubeconfig', 1, '{}', "
                ":conds, :status, '', 'test', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"),
                {"pk": pk, "cid": cid, "conds": json.dumps(conds), "status": status})

    def statuses():
        with engine.connect() as conn:
            return dict(conn.execute(sa.text("SELECT cred_id, status FROM credentials")).all())
    command.upgrade(cfg, "0012_web")
    assert statuses() == {"eks": "Warning", "old-cert": "Issues found", "fine": "Not tested"}
    command.downgrade(cfg, before)
    assert statuses()["eks"] == "Issues found"
    engine.dispose()

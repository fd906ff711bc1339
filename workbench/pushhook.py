"""Git push hooks: a push to a source's repository starts its sync.  Each source has its own
secret (a sealed value, ``source-hook:<id>``); a request proves it knows it in the format of
the forge that sends it:

* GitHub: ``X-Hub-Signature-256: sha256=<HMAC-SHA256 of the body, hex>``
* Gitea / Forgejo: ``X-Gitea-Signature: <HMAC-SHA256 of the body, hex>``
* GitLab: ``X-Gitlab-Token: <the secret itself>``
"""
from __future__ import annotations

import hashlib
import hmac
import json
from typing import Mapping

from sqlalchemy.orm import Session

from . import access, audit, background, sealed
from .audit import Actor
from .errors import AuthenticationRequired, NotFound
from .references import PipelineSource


def _name(source_id: int) -> str:
    return f"source-hook:{source_id}"


def new_secret(s: Session, barrier, actor: Actor, src: PipelineSource) -> str:
    """Create or replace the source's hook secret (editors); returned once."""
    access.require_on(s, actor, "editor", "source.hook_secret", workspace=src.workspace,
                      target=src.name)
    secret = sealed.put(s, barrier, _name(src.id))
    audit.record(s, actor, "source.hook_secret", workspace=src.workspace, target=src.name)
    return secret


def verified(secret: str, headers: Mapping[str, str], body: bytes) -> str | None:
    """The forge whose signature format matches and is right, or None."""
    mac = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    github = headers.get("X-Hub-Signature-256", "")
    if github:
        return "github" if hmac.compare_digest(github.encode(), f"sha256={mac}".encode()) \
            else None
    gitea = headers.get("X-Gitea-Signature", "")
    if gitea:
        return "gitea" if hmac.compare_digest(gitea.encode(), mac.encode()) else None
    gitlab = headers.get("X-Gitlab-Token", "")
    if gitlab:
        return "gitlab" if hmac.compare_digest(gitlab.encode(), secret.encode()) else None
    return None


def _branch_pushed(body: bytes) -> str | None:
    """The branch a push event names (``ref``), if the body says."""
    try:
        ref = json.loads(body).get("ref")
    except (ValueError, AttributeError):
        return None
    return ref[len("refs/heads/"):] if isinstance(ref, str) and \
        ref.startswith("refs/heads/") else None


def receive(vault, source_id: int, headers: Mapping[str, str], body: bytes,
            remote: str = "") -> dict:
    """Check the signature and queue a sync (after a running one: the push may be newer
    than what it fetched).  Refusals are audited; the answer never says which part failed."""
    with vault.factory() as s:
        src = s.get(PipelineSource, source_id)
        secret = sealed.read(s, vault.barrier, _name(source_id)) if src else None
    if src is None or secret is None:
        raise NotFound(f"no push hook for pipeline source {source_id}")
    actor = Actor(f"push-hook:{src.name}", role="editor", source=remote, kind="system")
    forge = verified(secret, headers, body)
    if forge is None:
        with vault.factory.begin() as s:
            audit.record(s, actor, "source.hook", outcome="denied", workspace=src.workspace,
                         target=src.name)
        raise AuthenticationRequired("the hook signature does not match this source's secret")
    branch = _branch_pushed(body)
    if src.kind == "git" and branch is not None and branch != src.branch:
        return {"source": src.id, "forge": forge, "queued": False,
                "reason": f"push to {branch!r}, the source follows {src.branch!r}"}
    queued = background.start_sync(vault, actor, src.id, behind=True)
    with vault.factory.begin() as s:
        audit.record(s, actor, "source.hook", workspace=src.workspace, target=src.name,
                     details={"forge": forge, "queued": queued})
    return {"source": src.id, "forge": forge, "queued": True}

"""Images for the docker executor: pulls with the step's credential, never to another registry."""
from __future__ import annotations

import re

from ..errors import ExecutionError
from . import masking
from .step import ResolvedStep

HUB_NAMES = {"docker.io", "index.docker.io", "registry-1.docker.io"}


def registry_of(image: str) -> str:
    """The registry host an image reference points at (``docker.io`` for Docker Hub)."""
    from docker.auth import resolve_repository_name
    from docker.utils import parse_repository_tag
    return resolve_repository_name(parse_repository_tag(image)[0])[0]


def same_registry(a: str, b: str) -> bool:
    norm = [re.sub(r"^https?://", "", x.strip().lower()).rstrip("/").split("/")[0] for x in (a, b)]
    return norm[0] == norm[1] or (norm[0] in HUB_NAMES and norm[1] in HUB_NAMES)


def scrub(step: ResolvedStep, text: str) -> str:
    """Foreign text (the engine's) minus anything secret: it should echo none; make sure."""
    hidden = list(step.secrets)
    auth = step.pull_auth
    if auth is not None:
        hidden += [auth.password, f"{auth.username}:{auth.password}"]  # base64 is derived
    return masking.scrub(text, hidden)[:500]


def pull_error(step: ResolvedStep, reason: str) -> ExecutionError:
    """Names the image, the registry user and the step's credential IDs; never the password."""
    auth = step.pull_auth
    if auth is None:
        who = "without credentials"
    else:
        # the planner lists the pull credential among the step's uses
        ids = ", ".join(f"{c}@{v}" for c, v in step.uses) or "(none recorded)"
        who = f"as user {auth.username} on {auth.registry} (credentials of this step: {ids})"
    return ExecutionError(f"step {step.name}: cannot pull image {step.image} {who}: "
                          f"{scrub(step, reason)}", image=step.image)


def ensure_image(client, step: ResolvedStep) -> None:
    """Pull ``step.image``: always with a pull credential, else only when it is not local."""
    import docker
    image, auth = step.image, step.pull_auth
    if auth is None:
        try:
            client.images.get(image)
            return
        except docker.errors.ImageNotFound:
            pass
        except docker.errors.APIError as exc:
            raise pull_error(step, exc.explanation or str(exc)) from None
    elif not same_registry(auth.registry, registry_of(image)):
        # the engine hands pull credentials to the image's registry: never to another one
        raise pull_error(step, f"the pull credential is for {auth.registry}, "
                               f"not for {registry_of(image)}")
    pull(client, step)


def pull(client, step: ResolvedStep) -> None:
    import docker
    from docker.utils import parse_repository_tag
    repo, tag = parse_repository_tag(step.image)
    auth = step.pull_auth
    # goes to the engine in the X-Registry-Auth header of this one request; never stored
    config = None if auth is None else {
        "username": auth.username, "password": auth.password, "serveraddress": auth.registry}
    try:
        for event in client.api.pull(repo, tag=tag or "latest", auth_config=config,
                                     stream=True, decode=True):
            if "error" in event:
                raise pull_error(step, str(event.get("error")))
    except docker.errors.APIError as exc:
        raise pull_error(step, exc.explanation or str(exc)) from None
    except ExecutionError:
        raise
    except Exception as exc:  # noqa: BLE001 - foreign exception text may quote anything
        raise pull_error(step, type(exc).__name__) from None

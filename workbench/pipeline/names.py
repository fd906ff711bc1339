"""The naming rules of pipelines: step names, credential references, variables, durations."""
from __future__ import annotations

import re

from .. import credtypes
from .resolve import Ref

MAX_TIMEOUT = 24 * 3600.0
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
CRED_ID = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")
REF = re.compile(r"^(?P<id>[^@\s]+)(?:@(?P<version>[0-9]{1,9}))?$")
IMAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]{0,254}$")
TIMEOUT = re.compile(r"^(?P<n>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>s|m|h)?$")
UNITS = {None: 1, "s": 1, "m": 60, "h": 3600}

# Variables that change how the step's shell or its tools start up, where they look for
# programs and libraries, or which daemon they talk to: binding them would hijack the step.
FORBIDDEN = frozenset({
    "PATH", "BASH_ENV", "ENV", "SHELLOPTS", "BASHOPTS", "PS4", "PROMPT_COMMAND", "IFS", "HOME",
    "SHELL", "DOCKER_HOST", "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY", "PYTHONPATH",
    "PYTHONSTARTUP", "PERL5OPT", "NODE_OPTIONS", "RUBYOPT", "GIT_SSH_COMMAND", "GIT_ASKPASS",
    "SSH_AUTH_SOCK"})
FORBIDDEN_PREFIXES = ("LD_", "DYLD_", "WORKBENCH_")


def env_name_problem(name: str) -> str | None:
    """Why ``name`` may not be set for a step, or None when it may."""
    if not isinstance(name, str) or not credtypes.ENV_NAME.match(name):
        return (f"{str(name)[:64]!r} is not a valid variable name "
                "(letters, digits, underscore; not starting with a digit)")
    if name.upper() in FORBIDDEN or name.upper().startswith(FORBIDDEN_PREFIXES):
        return f"{name} may not be set by a pipeline: it would change how the step runs"
    return None


def parse_ref(text: str) -> Ref | None:
    """``id`` or ``id@N`` → Ref; None when malformed."""
    m = REF.match(text) if isinstance(text, str) else None
    if not m or not CRED_ID.match(m["id"]):
        return None
    version = int(m["version"]) if m["version"] else None
    if version is not None and version < 1:
        return None
    return Ref(m["id"], version)


def parse_timeout(value) -> float | None:
    """``30s``, ``10m``, ``1h`` or a number of seconds → seconds; None when malformed."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        m = TIMEOUT.match(str(value).strip())
        if not m:
            return None
        seconds = float(m["n"]) * UNITS[m["unit"]]
    return seconds if 0 < seconds <= MAX_TIMEOUT else None

"""The resolved step: everything an executor may see, and nothing else."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FileSpec:
    """A secret file the step asked for: written 0600 into a private dir, ``env`` set to its path
    (or to its directory when ``expose_dir``, e.g. DOCKER_CONFIG)."""

    env: str
    filename: str
    content: bytes = field(repr=False)
    expose_dir: bool = False


@dataclass(frozen=True)
class PullAuth:
    registry: str
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class ResolvedStep:
    """A step after planning.  ``env`` holds only what the step asked for plus the allowlisted
    basics the planner chose; ``secrets`` are the raw values the masker must hide."""

    name: str
    run: str
    env: dict[str, str] = field(default_factory=dict, repr=False)
    files: tuple[FileSpec, ...] = ()
    image: str | None = None
    pull_auth: PullAuth | None = None
    timeout: float | None = None
    workdir: str | None = None
    executor: str = "local"
    secrets: tuple[bytes, ...] = field(default=(), repr=False)
    # (credential id, version) pairs, for the run record and the reference index
    uses: tuple[tuple[str, int], ...] = ()


@dataclass
class StepResult:
    name: str
    status: str  # success | failed | timeout | cancelled | error
    exit_code: int | None
    duration: float
    message: str = ""

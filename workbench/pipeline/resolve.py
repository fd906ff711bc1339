"""How the planner obtains credential values: the resolver interface and its HTTP form."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Sequence


@dataclass(frozen=True)
class Ref:
    """A reference as written in a pipeline: ``id`` or ``id@N``."""

    id: str
    version: int | None = None

    def __str__(self) -> str:
        return self.id if self.version is None else f"{self.id}@{self.version}"


@dataclass(frozen=True)
class ResolvedCredential:
    id: str
    version: int
    type: str
    values: dict[str, Any] = field(repr=False)  # as credtypes.validate returns them


class Resolver(ABC):
    """Turns references into values.  ``resolve`` raises NotFound (details['missing'] lists the
    refs that do not exist) or PermissionDenied; ``context`` (pipeline, step, run id) goes into
    the audit record and the run-time usage index."""

    @abstractmethod
    def resolve(self, refs: Sequence[Ref], *, context: dict | None = None
                ) -> dict[Ref, ResolvedCredential]: ...

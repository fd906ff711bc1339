"""Credential status: Kubernetes-style conditions, static validation and connectivity checks."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any, Callable

Check = Callable[[dict[str, Any], float], "Condition"]


@dataclass(frozen=True)
class Condition:
    type: str  # Valid | Reachable | Expiring
    status: str  # "True" | "False" | "Unknown"
    reason: str  # CamelCase, e.g. AuthenticationFailed
    message: str  # human sentence; never contains a secret value
    last_transition: str = ""  # ISO-8601 UTC; set by the status service when status changes

    def to_dict(self) -> dict:
        return asdict(self)


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


# credential type name → check(values, timeout) -> Condition(type="Reachable", ...)
CHECKS: dict[str, Check] = {}


def register(type_name: str) -> Callable[[Check], Check]:
    """Decorator registering the connectivity check of one credential type."""
    def wrap(fn: Check) -> Check:
        CHECKS[type_name] = fn
        return fn
    return wrap


def reachable(status: str, reason: str, message: str) -> Condition:
    """A ``Reachable`` condition: the outcome of one connectivity test."""
    return Condition("Reachable", status, reason, message)


def _load_checks() -> None:
    # every module in this package registers what it checks; importing them fills CHECKS
    import importlib
    import pkgutil
    for mod in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{mod.name}")


_load_checks()

from .validation import validate  # noqa: E402  (needs the names above)
from .verdict import summary, verify  # noqa: E402

__all__ = ["CHECKS", "Check", "Condition", "now_iso", "reachable", "register", "summary",
           "validate", "verify"]

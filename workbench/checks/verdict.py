"""Running a connectivity test safely, and the one-line status shown in the credential table."""
from __future__ import annotations

import logging

from ..errors import WorkbenchError
from . import CHECKS, Condition, reachable

log = logging.getLogger(__name__)

NO_ISSUES, ISSUES, NOT_TESTED, CHECKING = ("No issues found", "Issues found", "Not tested",
                                           "Checking…")
WARNING = "Warning"  # works, with a caveat: set by workbench.status, never by summary()


def verify(type_name: str, values: dict, timeout: float = 10.0) -> Condition:
    """Run the registered check of ``type_name``; never raises, never leaks exception text."""
    check = CHECKS.get(type_name)
    if check is None:
        return reachable("Unknown", "NotTestable",
                         f"there is no connectivity test for {str(type_name)[:64]} credentials")
    try:
        return check(values, timeout)
    except WorkbenchError as e:  # their messages are written never to contain a value
        return reachable("Unknown", "Unreachable", e.message)
    except Exception as e:  # str(e) may quote a URL with credentials: only the class is safe
        log.warning("connectivity check of a %s credential failed: %s", type_name,
                    type(e).__name__)
        return reachable("Unknown", "Unreachable",
                         f"the connectivity test could not run ({type(e).__name__})")


def is_problem(c: Condition) -> bool:
    """Valid False, Reachable False and Expiring True are problems; Unknown is not."""
    if c.type == "Expiring":
        return c.status == "True"
    return c.status == "False"


def summary(conditions: list[Condition] | None, checking: bool = False) -> tuple[str, str]:
    """(status, detail) for the table: Checking…, Issues found, No issues found or Not tested."""
    if checking:
        return CHECKING, "a connectivity test is running"
    if not conditions:
        return NOT_TESTED, ""
    problems = [c for c in conditions if is_problem(c)]
    if problems:
        return ISSUES, problems[0].message
    reach = next((c for c in conditions if c.type == "Reachable"), None)
    if reach is None:
        return NOT_TESTED, "no connectivity test has run"
    if reach.status == "True":
        return NO_ISSUES, reach.message
    return NOT_TESTED, reach.message

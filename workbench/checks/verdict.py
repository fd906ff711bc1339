"""Running a connectivity test safely, and the one-line status shown in the credential table."""
from __future__ import annotations

import logging
import threading

from ..errors import WorkbenchError
from . import CHECKS, Condition, deadline, reachable
from .deadline import DEADLINE

log = logging.getLogger(__name__)
GRACE = 0.5  # seconds past the deadline a check may take to report that it hit it

NO_ISSUES, ISSUES, NOT_TESTED, CHECKING = ("No issues found", "Issues found", "Not tested",
                                           "Checking…")
WARNING = "Warning"  # works, with a caveat: set by workbench.status, never by summary()


def verify(type_name: str, values: dict, timeout: float = DEADLINE) -> Condition:
    """Run the registered check of ``type_name`` with one overall deadline of ``timeout``
    seconds; never raises, never leaks exception text.  The check runs in a thread of its own
    so that the answer comes by the deadline whatever the check does; one that overruns (a
    network call without a guard) ends in its own time, and its result is dropped."""
    if type_name not in CHECKS:
        return reachable("Unknown", "NotTestable",
                         f"there is no connectivity test for {str(type_name)[:64]} credentials")
    box: list[Condition] = []
    run = threading.Thread(target=lambda: box.append(_run(type_name, values, timeout)),
                           name="check", daemon=True)
    run.start()
    run.join(timeout + GRACE)
    if box:
        return box[0]
    log.warning("connectivity check of a %s credential overran its deadline", type_name)
    return reachable("False", "Unreachable", f"no answer from the target within {timeout:g} s")


def _run(type_name: str, values: dict, timeout: float) -> Condition:
    try:
        with deadline.within(timeout):
            return CHECKS[type_name](values, timeout)
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

"""The one exception tree of Workbench.

Every error carries a machine-readable ``code`` and an HTTP ``status``.  Messages may name a
credential ID, a field, a file and a line — never a secret value.
"""
from __future__ import annotations


class WorkbenchError(Exception):
    """Base of every error Workbench raises on purpose."""

    code = "error"
    status = 400

    def __init__(self, message: str, **details):
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict:
        body = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


class ConfigError(WorkbenchError):
    """The program cannot start as configured (missing or wrong master key, bad URL)."""

    code = "config"
    status = 500


class CryptoError(WorkbenchError):
    """A ciphertext does not decrypt under the keys we hold (wrong key, tampered or moved row)."""

    code = "crypto"
    status = 500


class ValidationError(WorkbenchError):
    """Input is malformed; ``field`` names the offending field."""

    code = "invalid"
    status = 422

    def __init__(self, message: str, field: str | None = None, **details):
        if field:
            details["field"] = field
        super().__init__(message, **details)
        self.field = field


class ImmutableFieldError(ValidationError):
    """An attempt to change something that never changes (a credential ID, its workspace)."""

    code = "immutable"


class BadRequest(WorkbenchError):
    code = "bad_request"
    status = 400


class PayloadTooLarge(WorkbenchError):
    code = "too_large"
    status = 413


class AuthenticationRequired(WorkbenchError):
    code = "unauthenticated"
    status = 401


class PermissionDenied(WorkbenchError):
    code = "forbidden"
    status = 403


class NotFound(WorkbenchError):
    code = "not_found"
    status = 404


class Conflict(WorkbenchError):
    code = "conflict"
    status = 409


class Busy(WorkbenchError):
    """Too much of something is already running (connectivity tests); try again shortly."""

    code = "busy"
    status = 503


class Unavailable(WorkbenchError):
    """The database cannot be reached right now (down, restarting, locked); try again shortly."""

    code = "unavailable"
    status = 503


class CredentialInUse(Conflict):
    """A change would break pipelines; ``details['references']`` lists them."""

    code = "in_use"


class PipelineError(ValidationError):
    """A pipeline definition is wrong; names the file, line and field."""

    code = "pipeline_invalid"

    def __init__(self, message: str, file: str | None = None, line: int | None = None,
                 field: str | None = None, **details):
        where = ":".join(str(p) for p in (file, line) if p is not None)
        full = f"{where}: {message}" if where else message
        if file is not None:
            details["file"] = file
        if line is not None:
            details["line"] = line
        super().__init__(full, field=field, **details)
        self.problem = message  # without the location, for callers where it means nothing


class ExecutionError(WorkbenchError):
    """An executor could not prepare, run or clean up a step."""

    code = "execution"
    status = 500


class StepTimeout(ExecutionError):
    code = "timeout"

"""The executor contract and its registry."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, ClassVar

from ..errors import ValidationError
from .step import ResolvedStep, StepResult

Output = Callable[[bytes], None]


class Executor(ABC):
    """Runs one resolved step.  One instance per step; the runner calls, in order:

    ``prepare()`` — create the private secret dir, write files, pull images; may raise
    ExecutionError.  ``run(output)`` — run ``step.run`` (a POSIX shell script) with exactly
    ``step.env`` plus the file variables; feed every byte of stdout and stderr, interleaved in
    arrival order, to ``output`` (the runner masks it; executors never print); enforce
    ``step.timeout`` (kill the whole process tree / container, return status ``timeout``); honour
    ``cancel()`` from another thread (status ``cancelled``).  ``cleanup()`` — remove every file,
    directory, container and process the step created.  ``cleanup`` is always called, even when
    ``prepare`` failed half-way, and must be safe to call any number of times and never raise.
    """

    name: ClassVar[str]

    def __init__(self, step: ResolvedStep, *, scratch: str):
        self.step = step
        self.scratch = scratch  # parent for private secret dirs (tmpfs where there is one)

    @abstractmethod
    def prepare(self) -> None: ...

    @abstractmethod
    def run(self, output: Output) -> StepResult: ...

    @abstractmethod
    def cancel(self) -> None: ...

    @abstractmethod
    def cleanup(self) -> None: ...


EXECUTORS: dict[str, type[Executor]] = {}


def register(cls: type[Executor]) -> type[Executor]:
    """Class decorator; third parties register their own executors the same way."""
    EXECUTORS[cls.name] = cls
    return cls


def get(name: str) -> type[Executor]:
    if name not in EXECUTORS:
        # built-ins register on import
        from . import local  # noqa: F401
        try:
            from . import docker  # noqa: F401
        except ImportError:
            pass
    try:
        return EXECUTORS[name]
    except KeyError:
        raise ValidationError(f"unknown executor {name!r}; expected one of {sorted(EXECUTORS)}",
                              field="executor") from None

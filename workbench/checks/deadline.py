"""One overall deadline per connectivity check: connect, TLS and reading together.

A check may make several requests (a git probe, then the request itself; a kubeconfig makes up
to three), and a socket timeout bounds only one wait: a server that sends a byte every few
seconds never trips it.  ``verdict.verify`` sets the deadline for the thread running the
check; network code asks ``left()`` for its timeouts and ``guard``s its sockets, which are shut
down when the deadline passes."""
from __future__ import annotations

import contextvars
import socket
import threading
import time
from contextlib import contextmanager
from typing import Iterator

DEADLINE = 10.0  # seconds: what the UI and the API promise

_END: contextvars.ContextVar[float | None] = contextvars.ContextVar("check_deadline", default=None)


@contextmanager
def within(seconds: float) -> Iterator[None]:
    """Everything in the block (in this thread) shares one deadline ``seconds`` from now."""
    token = _END.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _END.reset(token)


def left(timeout: float) -> float:
    """``timeout``, or the time left before the deadline if that is shorter; raises
    ``TimeoutError`` once the deadline has passed."""
    end = _END.get()
    if end is None:
        return timeout
    remaining = end - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("the check's deadline passed")
    return min(timeout, remaining)


@contextmanager
def guard(sock: socket.socket | None) -> Iterator[None]:
    """Shut ``sock`` down when the deadline passes (a blocked read then returns), and turn the
    failure that follows into ``TimeoutError``."""
    end = _END.get()
    if sock is None or end is None:
        yield
        return
    timer = threading.Timer(max(0.0, end - time.monotonic()), _shut, (sock,))
    timer.daemon = True
    timer.start()
    try:
        yield
    except Exception:
        if time.monotonic() >= end:
            raise TimeoutError("the check's deadline passed") from None
        raise
    finally:
        timer.cancel()
    if time.monotonic() >= end:
        raise TimeoutError("the check's deadline passed")


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed

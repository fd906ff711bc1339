"""Secrets a step registers while it runs: ``::add-mask::VALUE`` lines and the WORKBENCH_MASK file."""
from __future__ import annotations

import os
from typing import Callable

from .masking import Masker

COMMAND = b"::add-mask::"
MAX_COMMAND = 65536  # a longer command line is hidden, not registered
MASK_ENV = "WORKBENCH_MASK"


class MaskCommands:
    """Feeds a step's output to ``masker``, taking out the commands that register a value.

    A line starting with ``::add-mask::`` (after optional blanks) registers the rest of the line;
    the line is shown as ``::add-mask::****``.  Anywhere else on a line (``set -x`` prints
    ``+ echo '::add-mask::VALUE'``) the rest of the line is hidden but nothing is registered.
    Lines appended to ``mask_file`` register one value each.  Registered values are masked from
    then on, and ``on_add`` hears of them so later steps mask them too."""

    def __init__(self, masker: Masker, *, mask_file: str | None = None,
                 on_add: Callable[[bytes], None] | None = None):
        self.masker = masker
        self.mask_file = mask_file
        self.on_add = on_add or (lambda _v: None)
        self._pending = b""  # a partial command, or the tail that may begin one
        self._line_start = True  # whether the next byte starts a line
        self._read = 0  # bytes of mask_file already read
        self._partial = b""  # an unfinished last line of mask_file
        self._dropping = False  # inside an over-long command line: hidden up to its end

    def feed(self, data: bytes) -> bytes:
        """Take the next piece of output; return what is safe to emit now."""
        self.poll()
        buf = self._pending + data if self._pending else data
        self._pending = b""
        out: list[bytes] = []
        i = 0
        if self._dropping:  # the rest of an over-long command line
            i = buf.find(b"\n")
            if i < 0:
                return b""
            self._dropping = False
        while True:
            j = buf.find(COMMAND, i)
            if j < 0:
                keep = _partial_command(buf, i)
                self._text(out, buf[i:len(buf) - keep])
                self._pending = buf[len(buf) - keep:]
                return b"".join(out)
            end = buf.find(b"\n", j)
            if end < 0 and len(buf) - j <= MAX_COMMAND:
                self._text(out, buf[i:j])
                self._pending = buf[j:]
                return b"".join(out)
            self._command(out, buf[i:j], buf[j:len(buf) if end < 0 else end], end >= 0)
            if end < 0:
                self._dropping = True
                return b"".join(out)
            i = end

    def flush(self) -> bytes:
        """End of the step: the rest, masked; a last command line without a newline counts."""
        self.poll()
        rest, self._pending, self._dropping = self._pending, b"", False
        out: list[bytes] = []
        j = rest.find(COMMAND)
        if j >= 0:
            self._command(out, rest[:j], rest[j:], True)
        else:
            self._text(out, rest)
        self._line_start = True
        return b"".join(out) + self.masker.flush()

    def _command(self, out: list[bytes], head: bytes, command: bytes, whole: bool) -> None:
        """Emit ``head``, then the command line hidden; register its value if it starts a line."""
        nl = head.rfind(b"\n")
        at_start = (nl >= 0 or self._line_start) and not head[nl + 1:].strip(b" \t")
        self._text(out, head)
        value = command[len(COMMAND):].rstrip(b"\r")
        if at_start and whole and value.strip():
            self.register(value)
        out.append(self.masker.feed(COMMAND + Masker.REPLACEMENT))
        self._line_start = False

    def register(self, value: bytes) -> None:
        self.masker.add(value)
        self.on_add(value)

    def poll(self) -> None:
        """Register the lines appended to the mask file since the last look."""
        if not self.mask_file:
            return
        try:
            size = os.stat(self.mask_file).st_size
            if size <= self._read:
                return
            with open(self.mask_file, "rb") as fh:
                fh.seek(self._read)
                data = fh.read(size - self._read)
        except OSError:
            return
        self._read += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        for line in lines:
            if line.rstrip(b"\r").strip():
                self.register(line.rstrip(b"\r"))

    def _text(self, out: list[bytes], data: bytes) -> None:
        if data:
            out.append(self.masker.feed(data))
            self._line_start = data.endswith(b"\n")


def _partial_command(buf: bytes, start: int) -> int:
    """How many bytes at the end of ``buf`` (from ``start``) may begin a command."""
    for k in range(min(len(COMMAND) - 1, len(buf) - start), 0, -1):
        if COMMAND.startswith(buf[len(buf) - k:]):
            return k
    return 0

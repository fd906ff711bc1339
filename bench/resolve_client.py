"""Many concurrent resolve clients in one asyncio loop, for the scale-out and fault benchmarks.

Each client holds one keep-alive HTTP/1.1 connection to one of the app instances (assigned
round-robin, as a connection-level load balancer would), resolves one credential per request,
and keeps per-credential counts of the answers, so that they can be checked against the audit
log.  When its instance stops answering (refused, reset, closed), the client counts the error
and moves on to the next instance after a short back-off, as a balancer's retry would.  At the
deadline each client finishes the request it has in flight: nothing is left unanswered.

With ``pace`` (seconds), each client sends a request every ``pace`` seconds instead of as soon
as the last one is answered, as CI steps do; a request that starts late because the previous
one was slow has its latency counted from when it was due (no coordinated omission)."""
from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field

N_CREDS = 100
TIMEOUT = 10.0  # seconds a request may take before it counts as an error


@dataclass
class Tally:
    """What the clients saw."""

    latencies: list[float] = field(default_factory=list)  # ms, answers of any status
    statuses: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)  # connection-level failures, by kind
    ok: Counter = field(default_factory=Counter)  # 200 answers per credential ID
    lost: int = 0  # sent, then the connection failed before an answer: outcome unknown
    events: list[tuple[float, int, str]] = field(default_factory=list)  # (time, port, outcome)

    @property
    def answered(self) -> int:
        return sum(self.statuses.values())

    def percentile(self, q: float) -> float:
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(q / 100 * len(xs)))] if xs else float("nan")


def request_bytes(token: str, cred: str) -> bytes:
    body = json.dumps({"refs": [cred]}).encode()
    return (f"POST /api/v1/resolve HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def _answer(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, connection may be reused) of one response."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers.get("connection", "").lower() != "close"


async def _client(n: int, ports: list[int], token: str, deadline: float, tally: Tally,
                  pace: float) -> None:
    target = n % len(ports)
    reader = writer = None
    i = n
    due = time.monotonic() + pace * n / 200  # spread the clients' first requests
    while time.monotonic() < deadline:
        if pace:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        cred = f"cred-{i % N_CREDS + 1:03d}"
        i += 1
        sent = False
        try:
            if writer is None:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", ports[target]), TIMEOUT)
            t0 = min(time.monotonic(), due) if pace else time.monotonic()
            due += pace
            writer.write(request_bytes(token, cred))
            sent = True
            status, keep = await asyncio.wait_for(_answer(reader), TIMEOUT)
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError,
                asyncio.LimitOverrunError, ValueError) as e:
            kind = type(e).__name__ + (" (after sending)" if sent else "")
            tally.errors[kind] += 1
            tally.lost += sent
            tally.events.append((time.monotonic(), ports[target], kind))
            if writer is not None:
                writer.close()
            reader = writer = None
            target = (target + 1) % len(ports)  # the balancer tries the next instance
            await asyncio.sleep(0.05)
            continue
        tally.latencies.append((time.monotonic() - t0) * 1000)
        tally.statuses[status] += 1
        tally.events.append((time.monotonic(), ports[target], str(status)))
        if status == 200:
            tally.ok[cred] += 1
        elif status >= 500:
            await asyncio.sleep(0.05)  # a client's back-off before it retries
        if not keep:
            writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


async def _run(ports: list[int], token: str, clients: int, seconds: float,
               pace: float) -> Tally:
    tally = Tally()
    deadline = time.monotonic() + seconds
    await asyncio.gather(*(_client(n, ports, token, deadline, tally, pace)
                           for n in range(clients)))
    return tally


def run(ports: list[int], token: str, clients: int, seconds: float, pace: float = 0.0) -> Tally:
    """Load the instances for ``seconds`` with ``clients`` concurrent clients."""
    return asyncio.run(_run(ports, token, clients, seconds, pace))

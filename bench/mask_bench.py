"""Benchmark: masker throughput against ``grep -F -f`` over the same patterns and log, and the
peak memory of masking a 1 GB stream.  Run: ``python bench/mask_bench.py [--size-mb 200]``."""
from __future__ import annotations

import argparse
import base64
import json
import os
import random
import resource
import shutil
import statistics
import string
import subprocess
import sys
import tempfile
import time
from urllib.parse import quote

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from workbench.pipeline.masking import Masker, patterns_for  # noqa: E402

CHUNK = 65536
SPECIAL = "!@#%&*+/=?^_~-:."


def make_secrets(n: int, rng: random.Random) -> list[bytes]:
    """Tokens of the shapes CI secrets have; some with characters URL/JSON encoders escape."""
    alnum = string.ascii_letters + string.digits
    out = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            out.append("ghp_" + "".join(rng.choices(alnum, k=36)))
        elif kind == 1:
            out.append("".join(rng.choices(alnum + "/+", k=40)))  # AWS-style secret key
        elif kind == 2:
            out.append("".join(rng.choices(alnum + SPECIAL + '"\\ ', k=rng.randint(12, 24))))
        else:
            user = "".join(rng.choices(string.ascii_lowercase, k=8))
            out.append(f"{user}:" + "".join(rng.choices(alnum + SPECIAL, k=16)))
    return [s.encode() for s in out]


def leak_line(secret: bytes, rng: random.Random) -> bytes:
    """A line that prints ``secret`` in one of the forms a step may print it."""
    form = rng.randrange(7)
    if form == 0:
        return b"+ export TOKEN=" + secret
    if form == 5:  # bash's xtrace of a value holding a single quote
        return b"+ echo 'token=" + secret.replace(b"'", b"'\\''") + b"'"
    if form == 6:
        return b"hex: " + secret.hex().encode()
    if form == 1:
        return b"> Authorization: Basic " + base64.b64encode(secret)
    if form == 2:
        return b"GET https://api.example.com/v1/login?token=" + quote(secret, safe="").encode()
    if form == 3:
        return json.dumps({"level": "debug", "msg": "config", "token": secret.decode()}).encode()
    pad = os.urandom(rng.randrange(3))
    return b"payload: " + base64.b64encode(pad + secret + os.urandom(12))


def log_lines(rng: random.Random):
    """An endless CI log: pip, docker, compiler, pytest, git, JSON and base64 lines."""
    hexd = "0123456789abcdef"
    t = 1_763_780_000.0
    while True:
        t += rng.random() / 50
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1e6) % 10**6:06d}Z"
        k, n = rng.randrange(10), rng.randrange(1000)
        if k == 0:
            line = f"Collecting package-{n}==1.{n % 7}.{n % 13}"
        elif k == 1:
            h = "".join(rng.choices(hexd, k=64))
            line = (f"  Downloading https://files.pythonhosted.org/packages/{h[:2]}/{h[2:4]}/"
                    f"{h[4:]}/package_{n}-1.{n % 7}.0-py3-none-any.whl ({n} kB)")
        elif k == 2:
            line = f"Step {n % 20}/20 : RUN apt-get install -y --no-install-recommends lib{n}-dev"
        elif k == 3:
            line = f" ---> Running in {''.join(rng.choices(hexd, k=12))}"
        elif k == 4:
            line = f"gcc -O2 -Wall -Iinclude -c src/module_{n}.c -o build/module_{n}.o"
        elif k == 5:
            line = f"tests/test_mod{n % 40}.py::test_case_{n} PASSED{' ' * 20}[{n % 100:3d}%]"
        elif k == 6:
            line = f"remote: Counting objects: {n % 100}% ({n}/{n + 7}), done."
        elif k == 7:
            line = json.dumps({"level": "info", "ts": t, "msg": "request finished",
                               "path": f"/api/v1/items/{n}", "status": 200, "ms": n / 10})
        elif k == 8:
            line = "data: " + base64.b64encode(rng.randbytes(48)).decode()
        else:
            line = f"npm WARN deprecated pkg-{n}@2.{n % 9}.1: use pkg-{n + 1} instead"
        yield f"{ts} {line}".encode()


def write_log(path: str, size: int, planted: list[bytes], rng: random.Random) -> int:
    """Write ``size`` bytes of log with one planted secret about every 64 KiB; return the count."""
    lines, done, plants, block = log_lines(rng), 0, 0, []
    with open(path, "wb") as f:
        while done < size:
            block = [next(lines) for _ in range(700)]
            block.append(leak_line(rng.choice(planted), rng))
            plants += 1
            data = b"\n".join(block) + b"\n"
            f.write(data)
            done += len(data)
    return plants


def cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def time_masker(path: str, secrets: list[bytes]) -> tuple[float, float, int]:
    """(CPU s, wall s) to build a masker and mask the file in 64 KiB writes; the **** count."""
    cpu, wall = time.process_time(), time.perf_counter()
    masker, masked = Masker(secrets), 0
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(CHUNK):
            masked += masker.feed(chunk).count(Masker.REPLACEMENT)
    masked += masker.flush().count(Masker.REPLACEMENT)
    return time.process_time() - cpu, time.perf_counter() - wall, masked


def time_grep(path: str, patterns_file: str) -> tuple[float, float, int]:
    """(CPU s, wall s) of ``grep -F -c -f``; the matching-line count."""
    cpu, wall = cpu_children(), time.perf_counter()
    res = subprocess.run(["grep", "-F", "-c", "-f", patterns_file, path], capture_output=True,
                         env={"LC_ALL": "C", "PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    return cpu_children() - cpu, time.perf_counter() - wall, int(res.stdout or 0)


def stream_child(mb: int, n_secrets: int) -> None:
    """Mask ``mb`` MiB generated on the fly (never stored); print MB/s as JSON."""
    rng = random.Random(5)
    secrets = make_secrets(n_secrets, rng)
    lines = log_lines(rng)
    blocks = []
    for _ in range(16):  # rotate through 16 distinct ~1 MiB blocks of log
        block = [next(lines) for _ in range(9000)] + [leak_line(rng.choice(secrets), rng)]
        blocks.append(b"\n".join(block) + b"\n")
    masker, total = Masker(secrets), 0
    start, cpu = time.perf_counter(), time.process_time()
    i = 0
    while total < mb * 2**20:
        data = blocks[i % 16]
        for off in range(0, len(data), CHUNK):
            masker.feed(data[off:off + CHUNK])
        total += len(data)
        i += 1
    masker.flush()
    print(json.dumps({"mb_s": total / 1e6 / (time.perf_counter() - start), "bytes": total,
                      "cpu_mb_s": total / 1e6 / (time.process_time() - cpu),
                      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size-mb", type=int, default=200)
    ap.add_argument("--stream-mb", type=int, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--secrets", default="10,1000,10000")
    ap.add_argument("--stream-secrets", type=int, default=1000)
    ap.add_argument("--child-stream", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_stream:
        return stream_child(args.child_stream, args.stream_secrets)

    # Peak RSS first: RUSAGE_CHILDREN is the maximum over every child waited for so far, and
    # grep children with many patterns must not count.
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    child = subprocess.run([sys.executable, __file__, "--child-stream", str(args.stream_mb),
                            "--stream-secrets", str(args.stream_secrets)],
                           capture_output=True, check=True, text=True)
    rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    assert before == 0, "the stream child must be the first child"
    stream = json.loads(child.stdout)
    # the same child with one secret: interpreter, imports and the generated blocks
    baseline = json.loads(subprocess.run(
        [sys.executable, __file__, "--child-stream", "64", "--stream-secrets", "1"],
        capture_output=True, check=True, text=True).stdout)

    rng = random.Random(1)
    counts = [int(x) for x in args.secrets.split(",")]
    all_secrets = make_secrets(max(counts), rng)
    tmp = tempfile.mkdtemp(prefix="mask-bench-")
    try:
        log = os.path.join(tmp, "ci.log")
        # every set holds the first 10 secrets, so every set has planted hits
        plants = write_log(log, args.size_mb * 2**20, all_secrets[:10] + all_secrets[:max(counts)]
                           [::97], rng)
        size = os.path.getsize(log)
        rows = []
        for n in counts:
            secrets = all_secrets[:n]
            patterns = patterns_for(secrets)
            assert not any(b"\n" in p for p in patterns)
            pat_file = os.path.join(tmp, f"patterns-{n}.txt")
            with open(pat_file, "wb") as f:
                f.write(b"\n".join(patterns) + b"\n")
            m_runs, g_runs = [], []
            for _ in range(args.runs):  # interleaved, so a busy neighbour slows both alike
                m_runs.append(time_masker(log, secrets))
                g_runs.append(time_grep(log, pat_file))
            m_cpu, m_wall = (statistics.median(r[i] for r in m_runs) for i in (0, 1))
            g_cpu, g_wall = (statistics.median(r[i] for r in g_runs) for i in (0, 1))
            rows.append((n, len(patterns), size / 1e6 / m_cpu, size / 1e6 / g_cpu, g_cpu / m_cpu,
                         g_wall / m_wall, m_runs[0][2], g_runs[0][2]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"log: {size / 1e6:.0f} MB, {plants} planted secret lines; median of {args.runs} "
          f"interleaved runs; MB/s per CPU second (user+sys); grep: GNU grep -F -c -f, LC_ALL=C\n")
    print("| secrets | patterns | per secret | masker MB/s | grep -F MB/s | masker ÷ grep (CPU) "
          "| masker ÷ grep (wall) | **** emitted | grep matching lines |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, npat, m, g, ratio, wall_ratio, masked, lines in rows:
        print(f"| {n:,} | {npat:,} | {npat / n:.1f} | {m:.0f} | {g:.0f} | {ratio:.1f}× "
              f"| {wall_ratio:.1f}× | {masked:,} | {lines:,} |")
    print(f"\n| stream | secrets | masker MB/s (CPU) | masker MB/s (wall) | peak RSS of the child "
          f"| same child, 1 secret | masker's share |\n|---|---:|---:|---:|---:|---:|---:|\n"
          f"| {stream['bytes'] / 2**30:.2f} GiB generated on the fly | {args.stream_secrets:,} "
          f"| {stream['cpu_mb_s']:.0f} | {stream['mb_s']:.0f} | {rss_mb:.0f} MB "
          f"| {baseline['rss_mb']:.0f} MB "
          f"| {rss_mb - baseline['rss_mb']:.0f} MB |")


if __name__ == "__main__":
    main()

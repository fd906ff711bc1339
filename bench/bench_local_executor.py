"""Local executor cost against a plain subprocess in the same run: step overhead and throughput.

Usage: python bench/bench_local_executor.py [rounds]
"""
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from workbench.pipeline.local import LocalExecutor  # noqa: E402
from workbench.pipeline.secretdir import SecretDir, scratch_root  # noqa: E402
from workbench.pipeline.step import FileSpec, ResolvedStep  # noqa: E402

MB = 1 << 20
BIG = f"head -c {64 * MB} /dev/zero"


def plain(script: str) -> int:
    """The baseline: sh -c with one pipe for stdout+stderr, read to the end."""
    proc = subprocess.Popen(["/bin/sh", "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    n = 0
    while chunk := proc.stdout.read1(65536):
        n += len(chunk)
    proc.wait()
    proc.stdout.close()
    return n


def executor(script: str, parent: str, files=()) -> int:
    step = ResolvedStep(name="b", run=script, env={"PATH": "/usr/bin:/bin"}, files=files)
    ex = LocalExecutor(step, scratch=parent)
    got = [0]
    try:
        ex.prepare()
        ex.run(lambda chunk: got.__setitem__(0, got[0] + len(chunk)))
    finally:
        ex.cleanup()
    return got[0]


def timed(fn, rounds: int) -> float:
    fn()  # warm-up
    samples = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    holder = SecretDir.create(scratch_root())
    files = (FileSpec("KUBECONFIG", "config", b"x" * 4096),
             FileSpec("DOCKER_CONFIG", "config.json", b"{}", expose_dir=True))
    try:
        rows = [
            ("step overhead (true)", timed(lambda: plain("true"), rounds),
             timed(lambda: executor("true", holder.path), rounds)),
            ("step overhead (true, 2 files)", timed(lambda: plain("true"), rounds),
             timed(lambda: executor("true", holder.path, files), rounds)),
            ("64 MiB output", timed(lambda: plain(BIG), rounds),
             timed(lambda: executor(BIG, holder.path), rounds)),
        ]
    finally:
        holder.remove()
    print(f"{'case':32} {'plain ms':>10} {'executor ms':>12} {'ratio':>7}   (medians of {rounds})")
    for name, base, ours in rows:
        print(f"{name:32} {base * 1000:10.2f} {ours * 1000:12.2f} {ours / base:7.2f}")
    print(f"executor throughput: {64 / rows[2][2]:.0f} MiB/s")


if __name__ == "__main__":
    main()

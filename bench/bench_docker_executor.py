"""Docker executor cost against a plain create/attach/start/wait/remove in the same run.

Measures a trivial step (the executor also writes a secret dir, an env file and a file, and
mounts them) and the throughput of 64 MiB of output.  Usage:
python bench/bench_docker_executor.py [rounds]
"""
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import docker  # noqa: E402

from tests.fixtures.docker_peers import BUSYBOX_TAG, busybox_rootfs_tar  # noqa: E402
from workbench.pipeline.docker import DockerExecutor  # noqa: E402
from workbench.pipeline.secretdir import SecretDir, scratch_root  # noqa: E402
from workbench.pipeline.step import FileSpec, ResolvedStep  # noqa: E402

BIG = f"head -c {64 << 20} /dev/zero"


def plain(client, script: str) -> int:
    """The baseline: the same engine calls without secrets, mounts or the sh wrapper."""
    api = client.api
    config = api.create_host_config(network_mode="host",
                                    log_config={"type": "none", "config": {}})
    cid = api.create_container(BUSYBOX_TAG, ["sh", "-c", script], host_config=config)["Id"]
    try:
        stream = api.attach(cid, stdout=True, stderr=True, stream=True)
        api.start(cid)
        n = sum(len(chunk) for chunk in stream)
        api.wait(cid)
        return n
    finally:
        api.remove_container(cid, force=True)


def executor(parent: str, script: str) -> int:
    step = ResolvedStep(name="bench", run=script, image=BUSYBOX_TAG, env={"A": "1", "B": "two"},
                        files=(FileSpec(env="F", filename="f", content=b"x" * 100),))
    ex = DockerExecutor(step, scratch=parent)
    got = [0]
    try:
        ex.prepare()
        ex.run(lambda chunk: got.__setitem__(0, got[0] + len(chunk)))
    finally:
        ex.cleanup()
    return got[0]


def paired(base, ours, rounds: int) -> tuple[float, float, float]:
    """Alternate the two so load changes on a shared machine hit both alike; returns the
    medians and the median of the per-round ratios."""
    base(), ours()  # warm-up
    a, b = [], []
    for _ in range(rounds):
        for fn, samples in ((base, a), (ours, b)):
            t = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - t)
    ratio = statistics.median(y / x for x, y in zip(a, b))
    return statistics.median(a), statistics.median(b), ratio


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    client = docker.from_env(timeout=300)
    try:
        client.images.get(BUSYBOX_TAG)
    except docker.errors.ImageNotFound:
        repo, tag = BUSYBOX_TAG.rsplit(":", 1)
        client.api.import_image_from_data(busybox_rootfs_tar(), repository=repo, tag=tag,
                                          changes=["ENV PATH=/bin:/usr/bin", 'CMD ["sh"]'])
    holder = SecretDir.create(scratch_root(tempfile.gettempdir()))
    try:
        for label, script, n in (("trivial step", "true", rounds),
                                 ("64 MiB output", BIG, max(3, rounds // 3))):
            base, ours, ratio = paired(lambda: plain(client, script),
                                       lambda: executor(holder.path, script), n)
            print(f"{label:14s} plain {base * 1000:8.1f} ms   executor {ours * 1000:8.1f} ms   "
                  f"ratio {ratio:5.2f}   (medians of {n} alternating rounds)")
    finally:
        holder.remove()
        client.close()


if __name__ == "__main__":
    main()

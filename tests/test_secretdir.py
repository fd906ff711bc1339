"""Private secret dirs: permissions, symlink safety, removal, and the sweep of dead runners' dirs."""
import os
import signal
import stat
import subprocess
import sys
import textwrap

import pytest

from workbench.errors import ExecutionError, ValidationError
from workbench.pipeline import secretdir
from workbench.pipeline.secretdir import SecretDir, scratch_root, sweep
from workbench.pipeline.step import FileSpec

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def parent(secret_scratch):
    """A private parent of our own under the real scratch root, so peers' dirs are never swept."""
    return secret_scratch


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def test_scratch_root_is_private_and_on_tmpfs_when_there_is_one(tmp_path):
    root = scratch_root(str(tmp_path))
    assert os.path.basename(root) == "workbench-secrets"
    assert mode(root) == 0o700 and os.lstat(root).st_uid == os.geteuid()
    if secretdir.fs_type("/dev/shm") == "tmpfs":
        assert secretdir.fs_type(root) == "tmpfs"


def test_files_are_0600_in_0700_dirs_whatever_the_umask(parent):
    old = os.umask(0)
    try:
        d = SecretDir.create(parent)
        plain = d.write(FileSpec("KUBECONFIG", "config.yaml", b"apiVersion: v1\n"))
        docker = d.write(FileSpec("DOCKER_CONFIG", "config.json", b'{"auths": {}}', True))
        raw = d.write_bytes("netrc", b"machine x")
    finally:
        os.umask(old)
    assert mode(d.path) == 0o700
    assert plain.startswith(d.path + "/") and plain.endswith("/config.yaml")
    assert open(plain, "rb").read() == b"apiVersion: v1\n"
    assert mode(plain) == 0o600 and mode(os.path.dirname(plain)) == 0o700
    assert os.path.isdir(docker) and mode(docker) == 0o700
    assert open(os.path.join(docker, "config.json"), "rb").read() == b'{"auths": {}}'
    assert mode(os.path.join(docker, "config.json")) == 0o600
    assert mode(raw) == 0o600
    d.remove()
    assert not os.path.exists(d.path)
    d.remove()  # idempotent


def test_two_files_with_the_same_name_do_not_collide(parent):
    with SecretDir.create(parent) as d:
        a = d.write(FileSpec("A", "id_rsa", b"one"))
        b = d.write(FileSpec("B", "id_rsa", b"two"))
        assert a != b and open(a, "rb").read() == b"one" and open(b, "rb").read() == b"two"


@pytest.mark.parametrize("name", ["../x", "a/b", ".hidden", "", "..", "a\nb"])
def test_bad_file_names_are_refused(parent, name):
    with SecretDir.create(parent) as d:
        with pytest.raises(ValidationError):
            d.write(FileSpec("F", name, b"x"))
        with pytest.raises(ValidationError):
            d.write_bytes(name, b"x")
    assert not os.path.exists(d.path)


def test_write_bytes_never_follows_a_planted_symlink(parent, tmp_path):
    target = tmp_path / "victim"
    target.write_bytes(b"untouched")
    with SecretDir.create(parent) as d:
        os.symlink(target, os.path.join(d.path, "token"))
        with pytest.raises(ExecutionError):
            d.write_bytes("token", b"secret")
    assert target.read_bytes() == b"untouched"


def test_parent_must_not_be_a_symlink_or_writable_by_others(parent, tmp_path):
    link = tmp_path / "link"
    os.symlink(parent, link)
    with pytest.raises(ExecutionError):
        SecretDir.create(str(link))
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    os.chmod(open_dir, 0o777)
    with pytest.raises(ExecutionError):
        SecretDir.create(str(open_dir))
    assert os.listdir(open_dir) == []


def test_scratch_root_refuses_a_planted_symlink(tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    base = tmp_path / "base"
    base.mkdir()
    os.symlink(elsewhere, base / "workbench-secrets")
    with pytest.raises(ExecutionError):
        secretdir._private_dir(str(base), "workbench-secrets")


def test_remove_never_raises_even_when_the_dir_is_already_gone(parent):
    d = SecretDir.create(parent)
    d.write_bytes("x", b"y")
    os.system(f"rm -rf {d.path}")
    d.remove()
    with pytest.raises(ExecutionError):
        d.write_bytes("z", b"y")


CREATOR = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, sys.argv[1])
    from workbench.pipeline.secretdir import SecretDir
    d = SecretDir.create(sys.argv[2])
    d.write_bytes("token", b"s3cret")
    print(d.path, flush=True)
    time.sleep(60)
""")


def spawn_creator(parent):
    proc = subprocess.Popen([sys.executable, "-c", CREATOR, ROOT, parent], stdout=subprocess.PIPE,
                            text=True)
    return proc, proc.stdout.readline().strip()


def test_sweep_removes_the_dir_of_a_killed_runner_and_spares_live_ones(parent):
    live = SecretDir.create(parent)
    alive_proc, alive_path = spawn_creator(parent)
    dead_proc, dead_path = spawn_creator(parent)
    try:
        assert os.path.isdir(dead_path) and os.path.isdir(alive_path)
        assert sweep(parent) == []  # nobody is dead yet
        dead_proc.send_signal(signal.SIGKILL)
        dead_proc.wait()
        assert os.path.isfile(os.path.join(dead_path, "token"))  # a kill -9 leaves it behind
        assert sweep(parent) == [dead_path]
        assert not os.path.exists(dead_path)
        assert os.path.isfile(os.path.join(alive_path, "token"))
        assert os.path.isdir(live.path)
    finally:
        for p in (alive_proc, dead_proc):
            p.kill()
            p.wait()
            p.stdout.close()
        live.remove()
    assert sweep(parent) == [alive_path]


def test_sweep_leaves_foreign_names_and_young_lockless_dirs_alone(parent):
    os.mkdir(os.path.join(parent, "keep-me"))
    young = os.path.join(parent, "0" * 32)
    os.mkdir(young)  # as if its creator were between mkdir and flock
    assert sweep(parent) == []
    os.utime(young, (1, 1))
    assert sweep(parent) == [young]
    assert os.path.isdir(os.path.join(parent, "keep-me"))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to an unprivileged user")
def test_remove_gets_through_dirs_a_step_made_unreadable():
    """As root every chmod is moot, so the owner here is an unprivileged user (in a fork)."""
    import tempfile

    base = tempfile.mkdtemp(prefix="wb-unpriv-", dir="/dev/shm")
    try:
        os.chmod(base, 0o700)
        os.chown(base, 65534, 65534)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through its exit status
            code = 1
            try:
                os.setgroups([])
                os.setresgid(65534, 65534, 65534)
                os.setresuid(65534, 65534, 65534)
                d = SecretDir.create(base)
                token = d.write(FileSpec("T", "token", b"s3cret"))
                os.chmod(token, 0)
                os.chmod(os.path.dirname(token), 0)
                try:
                    os.rmdir(d.path)
                except OSError:
                    pass  # the plain way fails: the case remove() has to handle
                d.remove()
                code = 2 if os.path.lexists(d.path) else 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert os.listdir(base) == []
    finally:
        subprocess.run(["rm", "-rf", base], check=True)

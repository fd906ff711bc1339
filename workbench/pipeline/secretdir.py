"""Private 0700 directories for a step's secret files, and the sweep of ones a dead runner left."""
from __future__ import annotations

import errno
import fcntl
import os
import re
import secrets
import shutil
import stat
import tempfile
import time

from ..credtypes import check_filename
from ..errors import ExecutionError
from .step import FileSpec

SUBDIR = "workbench-secrets"
LOCK = "lock"  # write_bytes refuses this name; FileSpec files live in subdirs
_NAME = re.compile(r"^[0-9a-f]{32}$")
_TMPFS = ("tmpfs", "ramfs")
# a lockless dir is being created or removed right now, unless old (creator died before flock)
LOCKLESS_GRACE = 60.0
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def fs_type(path: str) -> str | None:
    """The file system type of the mount holding ``path`` (from /proc/self/mountinfo)."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    real = os.path.realpath(path)
    best, kind = "", None
    for line in lines:
        left, _, right = line.partition(" - ")
        parts = left.split()
        if len(parts) < 5 or not right:
            continue
        mnt = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), parts[4])
        inside = real == mnt or real.startswith(mnt.rstrip("/") + "/")
        if inside and len(mnt) >= len(best):
            best, kind = mnt, right.split()[0]
    return kind


def _private_dir(parent: str, name: str) -> str:
    """Create (or accept our own existing) ``parent/name`` as a 0700 dir; refuse anything else."""
    path = os.path.join(parent, name)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    try:
        fd = os.open(path, _DIR_FLAGS)  # O_NOFOLLOW: a planted symlink fails here
    except OSError as e:
        raise ExecutionError(f"cannot use {path} for secrets: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid():
            raise ExecutionError(f"{path} belongs to another user; refusing to use it")
        if stat.S_IMODE(st.st_mode) != 0o700:
            os.fchmod(fd, 0o700)
    finally:
        os.close(fd)
    return path


def _usable(parent: str) -> bool:
    return os.path.isdir(parent) and os.access(parent, os.W_OK | os.X_OK)


def scratch_root(instance_dir: str | None = None) -> str:
    """The ``workbench-secrets`` dir (0700) under a tmpfs where there is one, else on disk."""
    candidates = [f"/run/user/{os.geteuid()}", "/dev/shm"]
    tmpfs = [c for c in candidates if _usable(c) and fs_type(c) in _TMPFS]
    disk = [os.path.join(instance_dir, "tmp")] if instance_dir else []
    disk.append(tempfile.gettempdir())
    for parent in tmpfs + disk:
        try:
            if parent not in tmpfs:
                os.makedirs(parent, 0o700, exist_ok=True)
            if _usable(parent):
                return _private_dir(parent, SUBDIR)
        except (OSError, ExecutionError):
            continue  # e.g. someone else owns /dev/shm/workbench-secrets: try the next one
    raise ExecutionError("no usable directory for secret files (tried "
                         + ", ".join(tmpfs + disk) + ")")


def _check_parent(fd: int, parent: str) -> None:
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or stat.S_IMODE(st.st_mode) & 0o022:
        raise ExecutionError(f"secret parent dir {parent} must be owned by this user and not "
                             f"writable by group or others")


def _write_at(dir_fd: int, name: str, data: bytes) -> None:
    """Write a new file 0600 relative to ``dir_fd``; never follows or reuses an existing name."""
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600, dir_fd=dir_fd)
    try:
        os.fchmod(fd, 0o600)  # the umask can only take bits away, but be exact
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def _unlock_tree(path: str) -> None:
    """Give ourselves rwx on every dir below ``path``: a step may have chmod'ed one to 0."""
    os.chmod(path, 0o700)
    for root, dirs, _files in os.walk(path):
        for d in dirs:
            sub = os.path.join(root, d)
            if not os.path.islink(sub):
                os.chmod(sub, 0o700)


def _rmtree(path: str) -> bool:
    """Remove ``path`` (never following symlinks), even below dirs a step made unreadable."""
    if os.path.islink(path):
        return False
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except OSError:
        try:
            _unlock_tree(path)
            shutil.rmtree(path)
        except FileNotFoundError:
            pass
        except OSError:
            return False
    return True


class SecretDir:
    """A 0700 dir with a random name; an exclusive flock on its lock file marks it alive."""

    def __init__(self, path: str, dir_fd: int, lock_fd: int):
        self.path = path
        self._fd: int | None = dir_fd
        self._lock: int | None = lock_fd

    @classmethod
    def create(cls, parent: str) -> "SecretDir":
        """Make a fresh private dir under ``parent`` (ours, not group/other-writable)."""
        try:
            pfd = os.open(parent, _DIR_FLAGS)
        except OSError as e:
            raise ExecutionError(f"cannot open secret parent dir {parent}: {e.strerror}") from None
        dfd = lock = None
        try:
            _check_parent(pfd, parent)
            name = secrets.token_hex(16)
            os.mkdir(name, 0o700, dir_fd=pfd)
            dfd = os.open(name, _DIR_FLAGS, dir_fd=pfd)
            os.fchmod(dfd, 0o700)
            lock = os.open(LOCK, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                           0o600, dir_fd=dfd)
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return cls(os.path.join(parent, name), dfd, lock)
        except OSError as e:
            for fd in (lock, dfd):
                if fd is not None:
                    os.close(fd)
            if dfd is not None:
                shutil.rmtree(name, dir_fd=pfd, ignore_errors=True)
            raise ExecutionError(f"cannot create a secret dir under {parent}: "
                                 f"{e.strerror}") from None
        finally:
            os.close(pfd)

    def _fd_or_raise(self) -> int:
        if self._fd is None:
            raise ExecutionError("secret dir already removed")
        return self._fd

    def write(self, spec: FileSpec) -> str:
        """Write ``spec.content`` as ``<random subdir>/<spec.filename>``, 0600.

        Returns the file's path, or the subdir's when ``spec.expose_dir`` (e.g. DOCKER_CONFIG).
        The real name is kept so tools that look at it (``config.json``, ``*.pem``) still work;
        the random 0700 subdir keeps two files of the same name apart.
        """
        check_filename(spec.filename)
        sub = self._subdir()
        try:
            sfd = os.open(sub, _DIR_FLAGS, dir_fd=self._fd_or_raise())
            try:
                _write_at(sfd, spec.filename, spec.content)
            finally:
                os.close(sfd)
        except OSError as e:
            raise ExecutionError(f"cannot write secret file for {spec.env}: {e.strerror}") from None
        subpath = os.path.join(self.path, sub)
        return subpath if spec.expose_dir else os.path.join(subpath, spec.filename)

    def write_bytes(self, name: str, data: bytes) -> str:
        """Write ``data`` to a new 0600 file ``name`` directly in the dir; returns its path."""
        check_filename(name)
        if name == LOCK:
            raise ExecutionError(f"{LOCK!r} is reserved in a secret dir")
        try:
            _write_at(self._fd_or_raise(), name, data)
        except OSError as e:
            raise ExecutionError(f"cannot write secret file {name}: {e.strerror}") from None
        return os.path.join(self.path, name)

    def _subdir(self) -> str:
        name = secrets.token_hex(8)
        try:
            os.mkdir(name, 0o700, dir_fd=self._fd_or_raise())
            sfd = os.open(name, _DIR_FLAGS, dir_fd=self._fd)
            try:
                os.fchmod(sfd, 0o700)
            finally:
                os.close(sfd)
        except OSError as e:
            raise ExecutionError(f"cannot create a secret subdir: {e.strerror}") from None
        return name

    def remove(self) -> None:
        """Delete the dir and everything in it, then release the lock; idempotent, never raises."""
        # on tmpfs an overwrite before unlink buys nothing: the pages are freed, not left on disk
        try:
            if self._fd is not None:
                _rmtree(self.path)
        except Exception:  # noqa: BLE001 - cleanup must never raise
            pass
        for attr in ("_fd", "_lock"):
            fd = getattr(self, attr)
            setattr(self, attr, None)
            if fd is not None:
                try:
                    os.close(fd)  # closing the lock fd releases the flock
                except OSError:
                    pass

    def __enter__(self) -> "SecretDir":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def _stale(pfd: int, name: str) -> bool:
    """True when no live process holds the dir's lock (its owner died)."""
    try:
        dfd = os.open(name, _DIR_FLAGS, dir_fd=pfd)
    except OSError:
        return False  # gone already, or a symlink: not ours to touch
    try:
        st = os.fstat(dfd)
        if st.st_uid != os.geteuid():
            return False
        try:
            lock = os.open(LOCK, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        except FileNotFoundError:
            return time.time() - st.st_mtime > LOCKLESS_GRACE
        except OSError:
            return False
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return False  # its owner is alive
            raise
        finally:
            os.close(lock)  # also drops our lock again
        return True
    finally:
        os.close(dfd)


def sweep(parent: str) -> list[str]:
    """Remove secret dirs under ``parent`` whose owner died; returns the removed paths."""
    removed: list[str] = []
    try:
        pfd = os.open(parent, _DIR_FLAGS)
    except OSError:
        return removed
    try:
        for name in os.listdir(pfd):
            if not _NAME.match(name):
                continue
            path = os.path.join(parent, name)
            try:
                if not _stale(pfd, name) or not _rmtree(path):
                    continue
            except OSError:
                continue
            removed.append(path)
    finally:
        os.close(pfd)
    return removed

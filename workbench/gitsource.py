"""The git side of pipeline sources: fetch with a credential, list what changed since a commit."""
from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import git

from . import gitauth
from .pipeline import masking
from .pipeline.parse import MAX_BYTES
from .references import PipelineSource

MAX_PATH = 1000  # the index's path column


def glob_regex(pattern: str) -> re.Pattern:
    """``*`` and ``?`` stay within one directory, ``**/`` spans any number of them."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[" and pattern.find("]", i + 2) != -1:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1:end].replace("\\", "\\\\")
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")


def matcher(path_glob: str) -> Callable[[str], bool]:
    """Whether a repository path is a pipeline file of this source."""
    rx = glob_regex(path_glob)
    return lambda path: len(path) <= MAX_PATH and rx.match(path) is not None


def blob_id(data: bytes) -> str:
    """Git's object ID for ``data`` as a blob, so local and git sources compare alike."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


# ---- what changed ---------------------------------------------------------------------------

@dataclass
class Changes:
    """Files to (re)read — (path, blob id, content, previous path) — and paths to drop."""

    upserts: list[tuple[str, str, bytes, str | None]] = field(default_factory=list)
    removes: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("added", "changed", "removed", "renamed"), 0))
    full: bool = False


def compare_blobs(changes: Changes, listing: dict[str, str], known: dict[str, str], read) -> None:
    """Full comparison of a listing (path → blob) with what is indexed (path → blob)."""
    changes.full = True
    for path, blob in sorted(listing.items()):
        if known.get(path) != blob:
            changes.counts["changed" if path in known else "added"] += 1
            changes.upserts.append((path, blob, read(path, blob), None))
    changes.removes = sorted(set(known) - set(listing))
    changes.counts["removed"] = len(changes.removes)


def local_changes(src: PipelineSource, known: Callable[[], dict[str, str]]) -> Changes:
    """A folder has no history: every matching file is read and compared by blob ID."""
    base, match = Path(src.url), matcher(src.path_glob)
    listing: dict[str, bytes] = {}
    for dirpath, dirs, files in os.walk(base):
        dirs[:] = [d for d in dirs if d != ".git"]
        for f in files:
            p = Path(dirpath, f)
            rel = p.relative_to(base).as_posix()
            if match(rel) and p.is_file() and not p.is_symlink():
                with open(p, "rb") as fh:
                    listing[rel] = fh.read(MAX_BYTES + 1)
    changes = Changes()
    compare_blobs(changes, {p: blob_id(d) for p, d in listing.items()}, known(),
                  lambda path, _blob: listing[path])
    return changes


def read_blob(repo: git.Repo, blob: str) -> bytes:
    """A blob's content from the object database (no checkout needed)."""
    binsha = bytes.fromhex(blob)
    if repo.odb.info(binsha).size > MAX_BYTES:
        return b"\0" * (MAX_BYTES + 1)  # parse_pipeline refuses it by size, unread
    return repo.odb.stream(binsha).read()


def git_changes(repo: git.Repo, src: PipelineSource, head: str,
                known: Callable[[], dict[str, str]]) -> Changes:
    """Only the files ``git diff`` names are read; without a usable indexed commit the whole
    tree is compared with ``known()`` (path → blob of what is indexed)."""
    match = matcher(src.path_glob)
    changes = Changes()
    if src.commit == head:
        return changes
    diff = None
    if src.commit:
        try:  # --raw names the new blob, so no tree is walked in Python
            diff = repo.git.diff("--raw", "-z", "-M", "--no-abbrev", "--no-ext-diff",
                                 src.commit, head)
        except git.GitCommandError:  # old commit gone (force-push and gc): full re-index
            diff = None
    if diff is None:
        out = repo.git.ls_tree("-r", "-z", "--full-tree", head)
        listing = {}
        for entry in filter(None, out.split("\0")):
            meta, path = entry.split("\t", 1)
            _mode, kind, blob = meta.split()
            if kind == "blob" and match(path):
                listing[path] = blob
        compare_blobs(changes, listing, known(), lambda _p, blob: read_blob(repo, blob))
        return changes
    tokens = diff.split("\0")
    i = 0
    while i < len(tokens) and tokens[i].startswith(":"):
        _old_mode, new_mode, _old_blob, blob, status = tokens[i][1:].split()
        status = status[0]
        if status in "RC":
            old, new, i = tokens[i + 1], tokens[i + 2], i + 3
        else:
            old = new = tokens[i + 1]
            i += 2
        was, now = status not in "AC" and match(old), status != "D" and match(new)
        if now and new_mode == "160000":  # a submodule is no file to read
            now = False
        if was and now and status == "R":
            kind = "renamed"
        elif now:
            kind = "changed" if was else "added"
        elif was:
            changes.removes.append(old)
            changes.counts["removed"] += 1
            continue
        else:
            continue
        changes.counts[kind] += 1
        changes.upserts.append((new, blob, read_blob(repo, blob),
                                old if kind == "renamed" else None))
    return changes


# ---- git ------------------------------------------------------------------------------------

@contextmanager
def git_env(root: Path, ctype: str | None, values: dict) -> Iterator[dict[str, str]]:
    """The environment of the git process: askpass for HTTPS, a private key file for SSH."""
    askpass = gitauth.install(root)
    env = {**gitauth.environment(askpass), "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_ALLOW_PROTOCOL": "http:https:ssh:git:file",  # never ext:: (runs commands)
           "GIT_CONFIG_GLOBAL": os.devnull, "GIT_SSH_COMMAND": "ssh -o BatchMode=yes"}
    # GitPython starts git with our whole environment plus these: blank out the server's own
    # settings (the master key may be among them), git and its helpers need none of them
    env.update({k: "" for k in os.environ if k.startswith("WORKBENCH_") and k not in env})
    keydir = None
    try:
        if ctype == "username_password":
            env.update(gitauth.environment(askpass, values.get("username", ""),
                                           values.get("password", "")))
        elif ctype == "secret_text":
            env.update(gitauth.environment(askpass, "x-access-token", values.get("secret", "")))
        elif ctype == "ssh_private_key":
            keydir = tempfile.mkdtemp(prefix=".key-", dir=root)  # 0700
            key = Path(keydir, "id")
            fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(values.get("private_key", "").rstrip("\n") + "\n")
            user = values.get("username")
            ssh = ["ssh", "-i", str(key), "-o", "IdentitiesOnly=yes",
                   "-o", "StrictHostKeyChecking=accept-new",
                   "-o", f"UserKnownHostsFile={root / 'known_hosts'}"]
            if user:
                ssh += ["-o", f"User={user}"]
            env["GIT_SSH_COMMAND"] = shlex.join(ssh)
            if values.get("passphrase"):
                env.update(SSH_ASKPASS=str(askpass), SSH_ASKPASS_REQUIRE="force",
                           WORKBENCH_ASKPASS_PASSWORD=values["passphrase"])
        yield env
    finally:
        if keydir:
            shutil.rmtree(keydir, ignore_errors=True)


def clean_error(src: PipelineSource, exc: git.GitCommandError, secrets: list[str],
                timeout: float | None = None) -> str:
    """The useful line of git's stderr, with every secret and any userinfo scrubbed."""
    text = exc.stderr if isinstance(exc.stderr, str) else str(exc.stderr or "")
    if timeout is not None and ("kill_after_timeout" in text or "did not complete in" in text):
        return (f"sync of source {src.name!r} failed: the fetch did not finish within "
                f"{timeout:g} s (WORKBENCH_GIT_TIMEOUT)")
    wrapped = re.match(r"\s*stderr: '(.*)'\s*\Z", text, re.S)  # GitPython's quoting
    lines = [ln.strip() for ln in (wrapped[1] if wrapped else text).splitlines()]
    useful = [ln for ln in lines if ln and not ln.startswith("Warning: Permanently added")] \
        or [f"git exited with {exc.status}"]
    msg = masking.scrub("; ".join(useful)[:500], secrets)
    msg = re.sub(r"://[^/@\s]+@", "://***@", msg)
    return f"sync of source {src.name!r} failed: {msg}"


def fetch(path: Path, src: PipelineSource, env: dict[str, str],
          timeout: float = 300.0) -> tuple[git.Repo, str]:
    """Clone once (a bare repository), then fetch the one branch; git and its helpers (ssh,
    remote-https) are killed after ``timeout`` seconds, so a remote that hangs cannot hold a
    request, a server thread and the source's lock (``sourcelock.hold``, held by the caller)."""
    if (path / "HEAD").exists():
        repo = git.Repo(path)
        _drop_stale_locks(path)
    else:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        repo = git.Repo.init(path, bare=True)
    if "origin" not in [r.name for r in repo.remotes]:  # also after an interrupted first sync
        repo.create_remote("origin", src.url)
    ref = f"refs/remotes/origin/{src.branch}"
    # The kill comes from a thread of this process; if the process is gone first (a server
    # stopped mid-sync), git's HTTP transport still gives up on a silent remote by itself.
    stall = {"GIT_HTTP_LOW_SPEED_LIMIT": "1", "GIT_HTTP_LOW_SPEED_TIME": str(int(timeout) + 5)}
    repo.git.fetch("--no-tags", "--quiet", "origin", f"+refs/heads/{src.branch}:{ref}",
                   env={**env, **stall}, kill_after_timeout=timeout)
    return repo, repo.git.rev_parse(f"{ref}^{{commit}}")


def _drop_stale_locks(path: Path) -> None:
    """A fetch killed (timeout, kill -9 of the server) can leave git's ``*.lock`` files behind,
    and every later fetch would fail on them.  Under the source's lock no git runs here."""
    for lock in [*path.glob("*.lock"), *(path / "refs").rglob("*.lock")]:
        lock.unlink(missing_ok=True)

"""Giving git a credential without argv, URLs or files: an askpass helper fed by environment."""
from __future__ import annotations

import os
from pathlib import Path

# Git (and ssh) ask this program for the username, password or passphrase.  It answers from its
# own environment, so the secret travels parent → child environment only.  When
# WORKBENCH_ASKPASS_DIR is set it also leaves a marker there: the caller learns that the remote
# really asked (a public repository never does).
SCRIPT = """#!/bin/sh
[ -z "$WORKBENCH_ASKPASS_DIR" ] || : > "$WORKBENCH_ASKPASS_DIR/asked"
case "$1" in
  *[Uu]sername*) printf '%s\\n' "$WORKBENCH_ASKPASS_USERNAME" ;;
  *) printf '%s\\n' "$WORKBENCH_ASKPASS_PASSWORD" ;;
esac
"""


def install(directory: Path) -> Path:
    """Write the helper into ``directory`` (0700), atomically and only when it differs."""
    path = directory / "askpass"
    if not path.exists() or path.read_text() != SCRIPT:
        tmp = directory / f".askpass-{os.getpid()}"
        tmp.write_text(SCRIPT)
        tmp.chmod(0o700)
        tmp.replace(path)
    return path


def environment(helper: Path, username: str = "", password: str = "") -> dict[str, str]:
    """What git needs to ask the helper instead of a terminal."""
    return {"GIT_ASKPASS": str(helper), "GIT_TERMINAL_PROMPT": "0",
            "WORKBENCH_ASKPASS_USERNAME": username, "WORKBENCH_ASKPASS_PASSWORD": password}

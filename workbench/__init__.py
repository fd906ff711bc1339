"""Workbench: a pipeline-oriented credential vault for CI."""
from __future__ import annotations


def __getattr__(name: str):
    # The app factory pulls in Flask, SQLAlchemy and the vault; importing it lazily keeps
    # `import workbench.pipeline.masking` (and a remote runner) light.
    if name == "create_app":
        from .factory import create_app
        return create_app
    raise AttributeError(f"module 'workbench' has no attribute {name!r}")

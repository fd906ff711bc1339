"""The server-rendered web workbench."""


def register(app) -> None:
    """Attach the UI blueprints (filled in by the UI)."""

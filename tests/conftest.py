"""Root fixtures.  Fixture modules in tests/fixtures/ are loaded as plugins, one per peer."""
from pathlib import Path

import pytest

pytest_plugins = sorted(
    f"tests.fixtures.{p.stem}" for p in (Path(__file__).parent / "fixtures").glob("*.py")
    if not p.stem.startswith("_"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing test shows the logs of the peers it used that run apart (fixtures/_apart)."""
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for name, value in getattr(item, "funcargs", {}).items():
            if callable(getattr(value, "log_tail", None)):
                report.sections.append((f"{name} log", value.log_tail()))

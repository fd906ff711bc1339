"""Root fixtures.  Fixture modules in tests/fixtures/ are loaded as plugins, one per peer."""
from pathlib import Path

pytest_plugins = sorted(
    f"tests.fixtures.{p.stem}" for p in (Path(__file__).parent / "fixtures").glob("*.py")
    if not p.stem.startswith("_"))

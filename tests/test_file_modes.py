"""Key and database files (issue 16, item 5): private modes, refused otherwise, clear messages."""
import os
import stat

import pytest

from tests.test_cli import wb  # noqa: F401  (the fixture: `workbench` as a real process)
from workbench import create_app
from workbench.config import Settings
from workbench.errors import ConfigError


def key_file_settings(vault, tmp_path, mode: int) -> Settings:
    """Settings for the test vault with its master key in a file of ``mode``."""
    path = tmp_path / "keys" / "master.key"
    path.parent.mkdir()
    path.write_text(vault.settings.master_key + "\n")
    path.chmod(mode)
    return Settings.from_env({}, instance=str(tmp_path / "inst"),
                             database_url=vault.settings.database_url,
                             master_key_file=str(path), testing=True)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_key_file_others_can_read_stops_start_up_with_the_fix(vault, tmp_path, mode):
    settings = key_file_settings(vault, tmp_path, mode)
    with pytest.raises(ConfigError) as info:
        create_app(settings)
    msg = info.value.message
    assert f"{mode:04o}" in msg and f"chmod 600 {settings.key_path}" in msg
    settings.key_path.chmod(0o600)
    create_app(settings)  # the fix is enough


def test_a_key_file_that_is_a_directory_is_one_clear_message(vault, tmp_path):
    settings = key_file_settings(vault, tmp_path, 0o600)
    settings.key_path.unlink()
    settings.key_path.mkdir()
    with pytest.raises(ConfigError, match="is a directory"):
        create_app(settings)


def test_the_cli_says_the_key_is_a_directory_without_a_traceback(wb):  # noqa: F811
    wb("init")
    key = wb.instance / "master.key"
    saved = key.read_text()
    key.unlink()
    key.mkdir()
    p = wb("cred", "list", check=False)
    assert p.returncode == 5 and "is a directory" in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    key.rmdir()
    key.write_text(saved)
    p = wb("cred", "list", check=False)
    assert p.returncode == 5 and "chmod 600" in p.stderr and "Traceback" not in p.stderr
    key.chmod(0o600)
    assert wb("doctor").returncode == 0


def test_a_new_sqlite_database_is_private_and_a_readable_one_is_refused(wb):  # noqa: F811
    wb("init")
    wb("cred", "add", "x", "--type", "secret_text", input="abcdefgh\n\n")
    files = sorted(wb.instance.glob("workbench.db*"))
    assert files and files[0].name == "workbench.db"
    for f in files:  # the database, and its WAL and shared-memory files while they exist
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    os.chmod(files[0], 0o644)
    p = wb("cred", "list", check=False)
    assert p.returncode == 5 and "database file" in p.stderr and "chmod 600" in p.stderr
    assert "Traceback" not in p.stderr

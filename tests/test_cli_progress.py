"""Progress lines of long commands: the watcher prints what the database says, on stderr."""
import threading

from workbench import credentials
from workbench.audit import SYSTEM
from workbench.cli.progress import rotation, watching


def test_the_watcher_prints_progress_while_the_work_runs(capsys):
    calls, seen = [], threading.Event()

    def count():
        calls.append(1)
        if len(calls) >= 2:
            seen.set()
        return f"step {len(calls)}"
    with watching(count, every=0.01):
        assert seen.wait(30), "no progress within 30 s"
    err = capsys.readouterr().err
    assert "workbench: step 1\nworkbench: step 2\n" in err


def test_rotation_progress_counts_data_keys_under_the_newest_term(vault):
    with vault.factory.begin() as s:
        for n in range(3):
            credentials.create_credential(s, vault.barrier, SYSTEM, workspace="default",
                                          cred_id=f"c{n}", type="secret_text",
                                          values={"secret": f"value-{n}"})
    assert rotation(vault.engine)() == "keys rotate: 3 of 3 data keys under key term 1"

"""Account commands of the ``workbench`` CLI, run as real processes."""
import json
import re

from tests.test_cli import wb  # noqa: F401 (a fixture)


def test_users_and_tokens_from_the_cli(wb):  # noqa: F811
    first = wb("init").stdout
    generated = re.search(r"\n\n    (\S+)\n", first).group(1)
    users = json.loads(wb("user", "list", "--json").stdout)
    assert users[0]["username"] == "admin" and users[0]["must_change_password"] is True
    assert "must_change_password" in wb("user", "list").stdout.splitlines()[0]

    # changing your own password needs the current one; the flag is cleared
    bad = wb("user", "password", "admin", "--password-stdin",
             input="wrong-wrong-wrong\nbrand-new-secret-1\n", check=False)
    assert bad.returncode == 2 and "current password is wrong" in bad.stderr
    weak = wb("user", "password", "admin", "--password-stdin",
              input=f"{generated}\npassword123\n", check=False)
    assert weak.returncode == 2 and "too common" in weak.stderr
    wb("user", "password", "admin", "--password-stdin", input=f"{generated}\nbrand-new-secret-1\n")
    assert json.loads(wb("user", "list", "--json").stdout)[0]["must_change_password"] is False

    # the last active admin stays
    for args in (("user", "disable", "admin"), ("user", "set-role", "admin", "viewer"),
                 ("user", "delete", "admin", "--yes")):
        p = wb(*args, check=False)
        assert p.returncode == 4 and "last active admin" in p.stderr, args  # refused

    wb("user", "add", "bob", "--role", "editor", "--password-stdin", input="bobs-first-pw-9\n")
    reset = wb("user", "reset-password", "bob").stdout
    one_time = re.search(r"\n\n    (\S+)\n", reset).group(1)
    assert one_time != "bobs-first-pw-9"
    wb("user", "disable", "bob")
    bob = [u for u in json.loads(wb("user", "list", "--json").stdout) if u["username"] == "bob"]
    assert bob[0]["disabled"] and bob[0]["must_change_password"]
    wb("user", "enable", "bob")

    made = json.loads(wb("token", "create", "laptop", "--user", "bob", "--json").stdout)
    listed = wb("token", "list", "--json").stdout
    assert made["token"] not in listed and "laptop" in listed
    assert made["prefix"] in wb("token", "list", "--user", "bob").stdout
    assert wb("token", "list", "--user", "nobody", "--json").stdout.strip() == "[]"
    wb("token", "revoke", str(made["id"]))
    assert json.loads(wb("token", "list", "--json").stdout)[0]["revoked"] is True
    missing = wb("token", "revoke", "999", check=False)
    assert missing.returncode == 3 and "token 999 does not exist" in missing.stderr
    wb("user", "delete", "bob", "--yes")
    assert "bob" not in wb("user", "list").stdout

# SPDX-License-Identifier: GPL-3.0-or-later
"""overlord create-key NAME and overlord sign --key KEY.pem < headers.yaml."""

from __future__ import annotations

import stat
from pathlib import Path

from managers.asserts import decode, load_private_key
from tests.support.daemon import invoke, run


def test_create_key_and_sign(tmp_path: Path) -> None:
    made = invoke("create-key", "root", "--dir", str(tmp_path))
    assert made.exit_code == 0, made.output
    key = load_private_key(tmp_path / "root.pem")
    assert f"sign-key-sha3-384: {key.id}" in made.output
    assert stat.S_IMODE((tmp_path / "root.pem").stat().st_mode) == 0o600
    again = run("create-key", "root", "--dir", str(tmp_path))
    assert again.returncode == 1 and "already exists" in again.stderr and again.stderr.count("\n") == 1

    invoke("create-key", "acme", "--dir", str(tmp_path))
    acme = load_private_key(tmp_path / "acme.pem")
    pub = (tmp_path / "acme.pub.pem").read_text().strip()
    body = "\n".join("  " + line for line in pub.splitlines())
    headers = (f"type: account-key\nauthority-id: root\naccount-id: acme\nname: default\n"
               f"since: 2030-01-01T00:00:00Z\npublic-key-sha3-384: {acme.id}\nrevision: 2\nbody: |\n{body}\n")
    signed = invoke("sign", "--key", str(tmp_path / "root.pem"), input=headers)
    assert signed.exit_code == 0, signed.output
    a = decode(signed.output)
    assert (a.type_name, a.revision, a.header("since"), a.body) == ("account-key", 2, "2030-01-01T00:00:00Z",
                                                                     pub + "\n")  # YAML | keeps the newline
    assert a.sign_key_id == key.id and a.verify(key.public_key)


def test_sign_errors_are_one_line(tmp_path: Path) -> None:
    invoke("create-key", "root", "--dir", str(tmp_path))
    key = str(tmp_path / "root.pem")
    for headers, message in [
        ("type: account\nauthority-id: root\n", "header 'account-id' is missing"),
        ("type: [unclosed\n", "not valid YAML"),
        ("- a list\n", "must be a YAML mapping"),
        ("type: nothing\nauthority-id: root\n", "unknown type 'nothing'"),
        ("type: account\nauthority-id: root\naccount-id: x\ndisplay-name: X\ntimestamp: 2030-01-01\n",
         "is not an RFC 3339 time"),
    ]:
        result = invoke("sign", "--key", key, input=headers)
        assert result.exit_code == 1, headers
        assert result.output.startswith("error: cannot ") and result.output.count("\n") == 1, result.output
        assert message in result.output, result.output
    # As a user sees it: one line on stderr, nothing on stdout.
    out = run("sign", "--key", key, input="type: account\n")
    assert (out.returncode, out.stdout, out.stderr.count("\n")) == (1, "", 1)
    assert out.stderr.startswith("error: cannot use account assertion to sign: header")
    missing = run("sign", "--key", str(tmp_path / "nothere.pem"), input="type: account\n")
    assert missing.returncode == 1 and "cannot read key" in missing.stderr
    assert run("sign").returncode == 2

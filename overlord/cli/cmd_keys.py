# SPDX-License-Identifier: GPL-3.0-or-later
"""overlord create-key NAME and overlord sign --key KEY.pem: keys and assertions (like snap create-key / sign)."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from ._errors import fail, one_line_errors
from ._group import cli


@cli.command("create-key")
@click.argument("name")
@click.option("--dir", "directory", type=click.Path(path_type=Path, file_okay=False), default=Path("."),
              show_default=True, help="Where to write NAME.pem (private, mode 0600) and NAME.pub.pem.")
@one_line_errors
def create_key(name: str, directory: Path) -> None:
    """Create an ed25519 key pair called NAME and print its id (sha3-384)."""
    from managers.asserts import create_key as create_key_files

    directory.mkdir(parents=True, exist_ok=True)
    private, public, key = create_key_files(directory, name)
    click.echo(f"created key {name}: {private} (private), {public} (public)")
    click.echo(f"sign-key-sha3-384: {key.id}")


@cli.command()
@click.option("--key", "key_path", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="The private key file (from create-key).")
@one_line_errors
def sign(key_path: Path) -> None:
    """Sign the assertion whose headers are read as YAML from stdin; print it.

    The YAML is a mapping of headers (type, authority-id, and those of the
    type); a "body" entry is the body. sign-key-sha3-384 and body-length are
    filled in.
    """
    import yaml

    from managers import InvalidAssertionError
    from managers.asserts import load_private_key
    from managers.asserts import sign as sign_assertion

    key = load_private_key(key_path)
    text = sys.stdin.read()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        fail(f"cannot sign: the headers on stdin are not valid YAML ({' '.join(str(e).split())})")
    if not isinstance(data, dict):
        fail("cannot sign: the headers on stdin must be a YAML mapping")
    body = data.pop("body", "")
    if not isinstance(body, str):
        fail("cannot sign: body must be text")
    headers: dict[str, Any] = {str(k): _text(v, str(k)) for k, v in data.items()}
    try:
        a = sign_assertion(headers, key, body)
    except InvalidAssertionError as e:
        fail(str(e))
    click.echo(a.text, nl=False)


def _text(value: Any, where: str) -> Any:
    """_text turns YAML scalars into header text (lists and maps keep their shape)."""
    if isinstance(value, bool) or value is None:
        fail(f"cannot sign: header {where!r} must be text, a number, a list or a map")
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list):
        return [_text(v, where) for v in value]
    if isinstance(value, dict):
        return {str(k): _text(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, datetime):  # YAML reads 2030-01-01T00:00:00Z as a time: write it back so
        text = value.isoformat()
        return text[:-6] + "Z" if text.endswith("+00:00") else text
    return str(value)

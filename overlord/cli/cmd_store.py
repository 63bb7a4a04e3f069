# SPDX-License-Identifier: GPL-3.0-or-later
"""`overlord store init/push/release/list`: make a store directory and publish snaps to its channels.

These work on the store directory itself (no daemon): a store is files
(docs/managers.md, "The store"), and pushing to it is atomic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.table import Table

from ._client import json_option
from ._errors import one_line_errors
from ._group import cli
from ._output import fail, out, plain, print_json

store_option = click.option("--store", "store_dir", required=True, envvar="OVERLORD_STORE", metavar="DIR",
                            type=click.Path(path_type=Path, file_okay=False),
                            help="The store directory (default: $OVERLORD_STORE).")


def _channels(text: str | None) -> list[str]:
    return [c.strip() for c in (text or "").split(",") if c.strip()]


@cli.group()
def store() -> None:
    """Make a store and publish snaps to its channels (a store is a directory; see docs/managers.md)."""


@store.command()
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@click.option("--root-key", "root_key", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="The trusted root's key (public or private PEM): pushes signed with it declare new snaps.")
@click.option("--authority", default="root", show_default=True, help="The account id the root key speaks for.")
@one_line_errors
def init(directory: Path, root_key: Path | None, authority: str) -> None:
    """Make an empty store in DIRECTORY (or record the root key of an existing one)."""
    from managers.asserts import load_public_key
    from managers.snapstore import SnapStore

    key_id = load_public_key(root_key).id if root_key is not None else None
    s = SnapStore.init(directory, root_key_id=key_id, authority=authority)
    click.echo(f"store ready in {s.root}" + (f" (root key {key_id[:12]}... for {authority!r})" if key_id else ""))


@store.command()
@click.argument("snap_file", metavar="SNAPFILE", type=click.Path(path_type=Path, dir_okay=False))
@store_option
@click.option("--key", "key_path", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="The private key signing the snap-revision: a developer's account-key, or the store's root key.")
@click.option("--channel", "channels", default=None, metavar="CHANNEL[,CHANNEL...]",
              help="Release the new revision to these channels (default: only upload it).")
@click.option("--publisher", default=None, help="With the root key, the publisher a new snap is declared for.")
@one_line_errors
def push(snap_file: Path, store_dir: Path, key_path: Path, channels: str | None, publisher: str | None) -> None:
    """Add SNAPFILE to the store as the snap's next revision, signed, and release it to channels."""
    from managers.asserts import load_private_key
    from managers.snapstore import SnapStore, short_channel

    if not snap_file.is_file():
        fail(f"cannot push {snap_file}: there is no such file")
    ss = SnapStore(store_dir).push(snap_file, key=load_private_key(key_path), channels=_channels(channels),
                               publisher=publisher)
    where = ", ".join(short_channel(c) for c in _channels(channels))
    click.echo(f"pushed {ss.name} {ss.version} as revision {ss.revision} (sha3-384 {ss.sha3_384[:12]}...)"
               + (f", released to {where}" if where else ", not released to any channel"))


@store.command()
@click.argument("name")
@click.argument("revision")
@click.argument("channels", metavar="CHANNEL[,CHANNEL...]")
@store_option
@one_line_errors
def release(name: str, revision: str, channels: str, store_dir: Path) -> None:
    """Release REVISION of snap NAME to channels (each then offers it)."""
    from managers.snapstore import SnapStore, short_channel

    chans = _channels(channels)
    SnapStore(store_dir).release(name, revision, chans)
    click.echo(f"released {name} revision {revision} to {', '.join(short_channel(c) for c in chans)}")


def listing_json(s: Any) -> list[dict[str, Any]]:
    """listing_json is what `store list --json` prints: per snap its revisions and channels."""
    from managers.snapstore import RISKS

    rows = []
    for name in s.names():
        li = s.listing(name)
        tracks = sorted({c.split("/")[0] for c in li.channels} | {"latest"})
        chans = {f"{t}/{r}": s.channel_revision(name, f"{t}/{r}") for t in tracks for r in RISKS}
        rows.append({"name": name, "snap-id": li.snap_id, "revisions": li.revisions,
                     "channels": {c: r for c, r in chans.items() if r is not None},
                     "released": li.channels})
    return rows


@store.command(name="list")
@store_option
@json_option
@one_line_errors
def list_(store_dir: Path, as_json: bool) -> None:
    """List the store's snaps: per channel, the revision (and version) it offers ("↑": it follows a less risky one)."""
    from managers.snapstore import SnapStore, short_channel

    s = SnapStore(store_dir)
    rows = listing_json(s)
    if as_json:
        print_json(rows)
        return
    if not rows:
        click.echo(f"The store {store_dir} has no snaps yet. Add one with 'overlord store push'.")
        return
    t = Table(box=None, pad_edge=False, show_edge=False, header_style="bold", expand=False)
    for col in ("Name", "Channel", "Rev", "Version"):
        t.add_column(col, overflow="fold")
    for row in rows:
        for i, (chan, rev) in enumerate(row["channels"].items()):
            own = row["released"].get(chan) == rev
            version = s.snap(row["name"], rev).version or "-"
            t.add_row(plain(row["name"] if i == 0 else ""), plain(short_channel(chan)),
                      plain(rev if own else f"↑ {rev}"), plain(version))
    out().print(t)


@store.command()
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False))
@click.option("--address", default="127.0.0.1", show_default=True, help="The address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="The port to listen on (0: any free one).")
@one_line_errors
def serve(directory: Path, address: str, port: int) -> None:
    """Serve the store in DIRECTORY over HTTP, read only (GET and HEAD, with Range; no listings, no dot files).

    Devices use it with `overlord daemon --store http://HOST:PORT/`; any static web server over the same
    directory does as well.
    """
    from managers.snapstore import make_server

    server = make_server(directory, address, port)
    host, bound = str(server.server_address[0]), int(server.server_address[1])
    click.echo(f"serving the store {directory} on http://{host}:{bound}/")
    import sys

    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()

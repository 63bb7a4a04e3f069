# SPDX-License-Identifier: GPL-3.0-or-later
"""`overlord info NAME` and `overlord find [QUERY]`: a snap as installed and as the store offers it (snapd's
cmd_info.go, cmd_find.go).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.table import Table

from ..client import ApiError
from ._client import json_option, session, state_dir_option
from ._group import cli
from ._output import fail, out, plain, print_json
from .cmd_snaps import publisher_text


def _short(channel: str) -> str:
    return channel.removeprefix("latest/")


def _local_and_store(state_dir: Path | None, name: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None,
                                                                  list[dict[str, Any]]]:
    with session(state_dir, f"show snap {name!r}") as c:
        local = store = None
        conns: list[dict[str, Any]] = []
        try:
            local = c.snap(name)
            conns = c.connections(snap=name).get("established", [])
        except ApiError as e:
            if e.kind not in ("snap-not-found",):
                raise
        try:
            found = c.find(name=name)
            store = found[0] if found else None
        except ApiError as e:
            if e.kind not in ("snap-not-found", "store-error") or local is None:
                if e.kind == "snap-not-found" and local is None:
                    fail(f"cannot find snap {name!r}: it is neither installed nor in the store")
                raise
    return local, store, conns


@cli.command()
@click.argument("name")
@json_option
@state_dir_option
def info(name: str, as_json: bool, state_dir: Path | None) -> None:
    """Show a snap: as installed (revision, tracking, connections) and as the store offers it (channels)."""
    local, store, conns = _local_and_store(state_dir, name)
    if as_json:
        print_json({"local": local, "store": store, "connections": conns})
        return
    about = local or store or {}
    lines = [("name", name), ("summary", about.get("summary") or "-"), ("publisher", publisher_text(about))]
    if about.get("id"):
        lines.append(("snap-id", about["id"]))
    if local is not None:
        lines.append(("tracking", _short(local.get("tracking-channel") or "") or "-"))
        lines.append(("installed", f"{local['version']} ({local['revision']})"
                      + (" disabled" if local.get("status") != "active" else "")))
        if local.get("hold"):
            lines.append(("hold", "forever" if local["hold"] == "forever" else f"until {local['hold']}"))
    width = max(len(k) for k, _ in lines) + 1
    for k, v in lines:
        out().print(plain(f"{k + ':':<{width}} {v}"), soft_wrap=True)
    description = (about.get("description") or "").strip()
    if description:
        out().print(plain("description: |"))
        for line in description.splitlines():
            out().print(plain(f"  {line}"), soft_wrap=True)
    if conns:
        out().print(plain("connections:"))
        for cn in conns:
            plug, slot = cn["plug"], cn["slot"]
            out().print(plain(f"  {plug['snap']}:{plug['plug']} -> {slot['snap']}:{slot['slot']} "
                              f"({cn['interface']}{', manual' if cn.get('manual') else ''})"), soft_wrap=True)
    if store is not None and store.get("channels"):
        out().print(plain("channels:"))
        chans = store["channels"]
        cw = max(len(c) for c in chans) + 1
        for chan, rev in chans.items():
            out().print(plain(f"  {chan + ':':<{cw}} {rev['version'] or '-'} ({rev['revision']}) {rev['size']} B"),
                        soft_wrap=True)
    elif local is not None and store is None:
        out().print(plain("channels: (not in the store)"))


@cli.command()
@click.argument("query", required=False, default="")
@json_option
@state_dir_option
def find(query: str, as_json: bool, state_dir: Path | None) -> None:
    """Find snaps in the store whose name or summary holds QUERY (every snap without one)."""
    with session(state_dir, "search the store") as c:
        found = c.find(query)
    if as_json:
        print_json(found)
        return
    if not found:
        fail(f'no snap matches "{query}"' if query else "the store has no snaps")
    t = Table(box=None, pad_edge=False, show_edge=False, header_style="bold", expand=False)
    for col in ("Name", "Version", "Publisher", "Summary"):
        t.add_column(col, overflow="fold")
    for s in found:
        pub = s.get("publisher") or {}
        t.add_row(plain(s["name"]), plain(s.get("version") or "-"), plain(pub.get("username") or "-"),
                  plain(s.get("summary") or "-"))
    out().print(t)

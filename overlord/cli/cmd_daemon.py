# SPDX-License-Identifier: GPL-3.0-or-later
"""`overlord daemon`: run the overlord and serve its REST API on the state directory's socket."""

from __future__ import annotations

from pathlib import Path

import click

from .. import paths
from ._group import Seconds, cli
from ._output import fail


@cli.command()
@click.option("--state-dir", type=click.Path(path_type=Path, file_okay=False), required=True,
              envvar=paths.STATE_DIR_ENV, show_envvar=True,
              help="Directory of the state database (state.db) and of the API socket (overlord.socket).")
@click.option("--root", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Root directory of the system the managers manage (snaps live under it).")
@click.option("--db-url", default=None, metavar="URL",
              help="Keep the state in this PostgreSQL database (postgresql+psycopg://...) instead of "
                   "<state-dir>/state.db; several daemons, on several hosts, may share it.")
@click.option("--store", default=None, metavar="DIR|URL",
              help="Where snaps are fetched from: a directory, a file:// URL, or an http(s):// URL "
                   "(overlord store serve).")
@click.option("--store-timeout", type=Seconds(min=0, min_open=True), default=None, metavar="SECONDS",
              help="Seconds an HTTP store gets to answer one request for its metadata, all of it (a "
                   "download gets this plus its size at 16 KiB/s).  [default: 20]")
@click.option("--trusted-key", type=click.Path(path_type=Path, dir_okay=False), default=None, metavar="FILE",
              help="The trusted root's public key (PEM) that every assertion chain must reach "
                   "(default: trusted-root.pub.pem in the state directory, if there is one).")
@click.option("--trusted-authority", default="root", show_default=True, metavar="ACCOUNT",
              help="The account the trusted root key speaks for.")
@click.option("--seed", type=click.Path(path_type=Path, file_okay=False), default=None, metavar="DIR",
              help="Seed the system from DIR at its first start (default: seed/ in the state directory, if any); "
                   "changes that need a seeded system wait for it.")
@click.option("--group", default=None, metavar="GROUP",
              help="Members of this group (a name or gid) may POST, besides root.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
              default="info", show_default=True, help="Least severe log messages written to stderr.")
@click.option("--stop-timeout", type=Seconds(min=0), default=10.0, show_default=True,
              help="Seconds running handlers get to return once asked to stop.")
@click.option("--stop-services", is_flag=True,
              help="Stop the snaps' services when the daemon stops (default: they keep running and the next "
                   "daemon adopts them).")
@click.option("--service-user", default=None, metavar="USER",
              help="Run the snaps' services as this user, who gets their data directories (default: the "
                   "daemon's user, root like snapd's services).")
@click.option("--setup", default=None, metavar="MODULE:FUNCTION",
              help="Call FUNCTION(overlord) before the loop starts, to add handlers, managers or endpoints.")
# The defaults are overlord.daemon.limits.Limits' (not imported here: the command line starts light).
@click.option("--max-connections", type=click.IntRange(min=2), default=None,
              help="Connections served at once, everyone together.  [default: 256]")
@click.option("--max-user-connections", type=click.IntRange(min=1), default=None,
              help="Connections served at once per user other than root and the daemon's own.  [default: 32]")
@click.option("--root-connections", type=click.IntRange(min=1), default=None,
              help="Of --max-connections, how many are kept for root and the daemon's own user.  [default: 16]")
@click.option("--header-timeout", type=Seconds(min=0, min_open=True), default=None,
              help="Seconds a connection gets to send a complete request header.  [default: 5]")
@click.option("--web", default=None, metavar="HOST:PORT",
              help="Also serve the web view, read only, on this loopback address (127.0.0.1:8080, [::1]:8080, "
                   "or a port alone; 0 picks one). The socket serves it at /web/ anyway.")
def daemon(state_dir: Path, root: Path, db_url: str | None, store: str | None, store_timeout: float | None,
           trusted_key: Path | None,
           trusted_authority: str, seed: Path | None, group: str | None, log_level: str, stop_timeout: float,
           stop_services: bool, service_user: str | None, setup: str | None, max_connections: int | None,
           max_user_connections: int | None, root_connections: int | None, header_timeout: float | None,
           web: str | None) -> None:
    """Run the overlord's loop and serve its REST API until SIGTERM or SIGINT."""
    from engine import EngineError

    from ..daemon.access import AccessPolicy
    from ..daemon.factory import DaemonOptions, system_daemon
    from ..daemon.limits import Limits
    from ..daemon.server import DaemonError, setup_logging
    from ..daemon.web.port import parse_address

    setup_logging(log_level)
    try:
        web_address = parse_address(web) if web is not None else None
    except ValueError as e:
        fail(str(e))
    options = DaemonOptions(state_dir=state_dir, root=root, store=store, stop_timeout=stop_timeout, setup=setup,
                            trusted_key=trusted_key, trusted_authority=trusted_authority, db_url=db_url,
                            stop_services=stop_services, service_user=service_user, seed=seed, web=web_address,
                            store_timeout=store_timeout)
    try:
        given = {"total": max_connections, "per_user": max_user_connections, "reserve": root_connections,
                 "header_timeout": header_timeout}
        limits = Limits(**{k: v for k, v in given.items() if v is not None})  # type: ignore[arg-type]
        code = system_daemon(options, AccessPolicy(group), limits).run()
    except (EngineError, DaemonError, ValueError) as e:
        fail(str(e))
    except OSError as e:
        fail(f"cannot run the daemon: {e.strerror or e}" + (f" ({e.filename})" if e.filename else ""))
    raise SystemExit(code)

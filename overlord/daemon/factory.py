# SPDX-License-Identifier: GPL-3.0-or-later
"""How the daemon gets its overlord: make_overlord, and the setup hook that extends it.

make_overlord is the one place that decides which overlord the daemon runs:
the system overlord of `managers` (``SystemOverlord(state_dir, root,
store=..., trusted_key=...)``) on <state-dir>/state.db, managing the system
under the root. The trusted root key is --trusted-key, else the file
TRUSTED_KEY_NAME in the state directory when there is one (docs/daemon.md).

A setup hook, ``--setup MODULE:FUNCTION``, is called as ``FUNCTION(overlord)``
once the overlord exists and before its loop starts: it may register task
handlers or managers, and may return more Endpoints to serve. Tests use it to
run changes through a real daemon; an embedder can use it to serve its own
resources next to the built-in ones.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine import DatabaseError
from engine.store import locate
from managers import SystemOverlord
from managers.asserts import load_public_key
from managers.errors import KeyFileError
from managers.snapstore import is_http, location_path, open_snap_store

from .. import paths
from . import ENDPOINTS
from .api import Endpoint
from .api_snaps import sweep_uploads
from .server import Daemon

if TYPE_CHECKING:
    from engine import Overlord
    from managers.asserts import PublicKey

    from .access import AccessPolicy
    from .limits import Limits
    from .server import Daemon

log = logging.getLogger("overlord.daemon")

#: SetupHook is what --setup names: called with the overlord, it may return endpoints to add.
SetupHook = Callable[["Overlord"], "Sequence[Endpoint] | None"]
#: TRUSTED_KEY_NAME is the trusted root's public key (PEM) in the state directory, used without --trusted-key.
TRUSTED_KEY_NAME = "trusted-root.pub.pem"
#: UPLOADS_NAME is the directory of the state directory where uploaded snap files are received.
UPLOADS_NAME = "uploads"
#: DEFAULT_AUTHORITY is the account the trusted root key speaks for unless --trusted-authority says otherwise.
DEFAULT_AUTHORITY = "root"
#: SEED_DIR_NAME is the seed directory looked for in the state directory when --seed is not given.
SEED_DIR_NAME = "seed"


@dataclass(frozen=True)
class DaemonOptions:
    """DaemonOptions are what the daemon is started with."""

    #: Where the state database and the socket live.
    state_dir: Path
    #: The root of the system the managers manage (snaps live under it); not the state directory.
    root: Path
    #: Where snaps are fetched from (a directory, a file:// or an http(s):// URL), for the snap manager.
    store: str | None = None
    #: How long an HTTP store gets to answer one metadata request (None: managers.snapstore's DEFAULT_TIMEOUT).
    store_timeout: float | None = None
    #: How long running handlers get to return after their tomb is killed, at stop.
    stop_timeout: float = 10.0
    #: The setup hook, "module:function", or None.
    setup: str | None = None
    #: The trusted root's public key file (PEM); None: <state-dir>/trusted-root.pub.pem if it exists.
    trusted_key: Path | None = None
    #: The account the trusted root key speaks for.
    trusted_authority: str = DEFAULT_AUTHORITY
    #: A PostgreSQL URL: the state lives there (shared with other daemons), not in <state-dir>/state.db.
    db_url: str | None = None
    #: Whether stopping the daemon stops the snaps' services (default: they keep running, like snapd's).
    stop_services: bool = False
    #: The user the snaps' services run as (None: the daemon's own, root in production).
    service_user: str | None = None
    #: The seed the system is seeded from at first start; None: <state-dir>/seed if it exists (else none).
    seed: Path | None = None
    #: The loopback address and port of the web view (--web; overlord.daemon.web.parse_address), or None.
    web: tuple[str, int] | None = None

    def seed_dir(self) -> Path | None:
        """seed_dir is the seed of the first start: --seed, else the state directory's seed/, or None."""
        if self.seed is not None:
            return self.seed
        default = self.state_dir / SEED_DIR_NAME
        return default if default.is_dir() else None

    def trusted_key_file(self) -> Path | None:
        """trusted_key_file is the key file the daemon trusts: --trusted-key, else the state directory's, or None."""
        if self.trusted_key is not None:
            return self.trusted_key
        default = self.state_dir / TRUSTED_KEY_NAME
        return default if default.exists() else None


def make_overlord(options: DaemonOptions) -> Overlord:
    """make_overlord opens (creating or migrating) the state database and builds the daemon's SystemOverlord.

    It raises engine.DatabaseInUseError when another process holds the
    database, and the managers' errors (one line each) for a store or a
    trusted key that cannot be used.
    """

    db = options.state_dir / paths.DB_NAME
    try:
        options.state_dir.mkdir(parents=True, exist_ok=True)
        if options.db_url is None and not db.exists():
            # Created private: the state of the system is for the daemon (readers go through the API).
            # SQLite gives its -wal and -shm files the database's mode.
            os.close(os.open(db, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    except OSError as e:
        raise DatabaseError(f"cannot create state database {db}: {e.strerror}") from None
    key_file = options.trusted_key_file()
    key = load_trusted_key(key_file) if key_file is not None else None  # before the database is opened
    if options.store is not None and not is_http(options.store):
        location_path(options.store)  # likewise: a URL of another kind is refused here
    if options.service_user is not None:
        import pwd

        try:
            pwd.getpwnam(options.service_user)
        except KeyError:
            raise ValueError(f"cannot run the services as user {options.service_user!r}: there is no such "
                             "user") from None
    seed = options.seed_dir()
    store = open_snap_store(options.store, timeout=options.store_timeout) if options.store is not None else None
    o = SystemOverlord(options.state_dir, options.root, store=store, trusted_key=key,
                       trusted_authority=options.trusted_authority, stop_timeout=options.stop_timeout,
                       url=options.db_url, stop_services=options.stop_services,
                       service_user=options.service_user, seed=seed)
    if seed is not None:
        log.info("seeding from %s at first start (changes that need a seeded system wait for it)", seed)
    if key is not None:
        log.info("trusting key %s (%s) for account %r", key.id, key_file, options.trusted_authority)
    if store is not None and not is_http(store.location) and not store.root.is_dir():
        log.warning("the store %s is not a directory (yet): installs from it fail until it is", store.location)
    return o


def load_trusted_key(path: Path) -> PublicKey:
    """load_trusted_key reads the trusted root's public key; a private key is refused (KeyFileError).

    The root's private key signs account keys and declarations: it belongs on
    an offline machine, never on a device that only verifies.
    """

    try:
        with open(path, "rb") as f:
            head = f.read(64 * 1024)
    except OSError as e:
        raise KeyFileError(f"cannot read key {path}: {e.strerror}") from None
    if b"PRIVATE KEY" in head:
        raise KeyFileError(f"cannot use trusted key {path}: it is a private key; give its public half "
                           "(NAME.pub.pem, as 'overlord create-key' writes it) and keep the private key off this "
                           "machine")
    return load_public_key(path)


def system_daemon(options: DaemonOptions, policy: AccessPolicy | None = None, limits: Limits | None = None) -> Daemon:
    """system_daemon is the snap system's daemon (`overlord daemon`): a Daemon of the SystemOverlord.

    It serves ENDPOINTS (the core ones and the snap system's), receives
    uploads in <state-dir>/uploads, gives the hooks the socket for `overlord
    ctl`, and runs the setup hook before the loop starts.
    """

    hook = load_setup(options.setup) if options.setup else None  # a bad one: before any work
    uploads = options.state_dir / UPLOADS_NAME

    def on_start(o: Overlord, where: str) -> list[Endpoint]:
        hm = getattr(o, "hook_manager", None)
        if hm is not None:  # hooks reach the daemon here with `overlord ctl`
            hm.socket = Path(where)
        with o.state:
            sweep_uploads(o.state, uploads, partial=True)  # nothing is being received yet
        return run_setup(options.setup, o, hook)

    def info(o: Overlord) -> dict[str, Any]:
        return {"state-dir": str(options.state_dir.resolve()), "root": str(options.root), "store": options.store,
                "database": database_name(options), **trust_info(o)}

    return Daemon(lambda: make_overlord(options), socket_path=options.state_dir / paths.SOCKET_NAME,
                  endpoints=ENDPOINTS, policy=policy, limits=limits, stop_timeout=options.stop_timeout, info=info,
                  upload_dir=uploads, on_start=on_start, web=options.web)


def database_name(options: DaemonOptions) -> str:
    """database_name is where the state lives, for people: the file, or the URL without its password."""
    if options.db_url is None:
        return str((options.state_dir / paths.DB_NAME).resolve())
    return locate(url=options.db_url).shown


def trust_info(o: Overlord) -> dict[str, str | None]:
    """trust_info tells GET /v2/system-info what the daemon trusts: the root key's id and its account."""
    am = getattr(o, "assert_manager", None)
    trusted = am.trusted if am is not None else None
    return {"trusted-key": trusted.key.id if trusted is not None else None,
            "trusted-authority": trusted.authority_id if trusted is not None else None}


def load_setup(spec: str) -> SetupHook:
    """load_setup imports the hook named "module:function", with an error naming what is wrong."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"cannot use setup hook {spec!r}: it must be MODULE:FUNCTION")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"cannot use setup hook {spec!r}: cannot import {module_name}: {e}") from None
    hook = getattr(module, attr, None)
    if not callable(hook):
        raise ValueError(f"cannot use setup hook {spec!r}: {module_name} has no function {attr}")
    return hook  # type: ignore[no-any-return]


def run_setup(spec: str | None, overlord: Overlord, hook: SetupHook | None = None) -> list[Endpoint]:
    """run_setup calls the setup hook (hook, loaded from spec), if any, and returns the endpoints it adds."""
    if spec is None:
        return []
    extra = (hook or load_setup(spec))(overlord) or []
    if not all(isinstance(ep, Endpoint) for ep in extra):
        raise ValueError(f"cannot use setup hook {spec!r}: it must return Endpoints or None")
    return list(extra)

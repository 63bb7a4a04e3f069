# SPDX-License-Identifier: GPL-3.0-or-later
"""The deployer's daemon: its overlord, served by overlord.daemon's building block with a route of its own.

    python -m deployer.daemon --state-dir DIR --target DIR [--group GROUP]

serves on DIR/overlord.socket the endpoints of any overlord (changes, tasks,
warnings, system-info) and its own:

- `POST /v2/deploy` `{"files": {"index.html": "..."}}`: an async answer naming
  the deployment's change (409 when a file is being deployed, 400 for a bad
  name); root or `--group` only, like every POST;
- `GET /v2/deployed`: each deployed file and its sha256.

The `overlord` command's change verbs work against it unchanged:
`overlord changes --state-dir DIR`, `overlord tasks ID`, `overlord watch ID`,
`overlord abort ID`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from engine import Overlord
from overlord.daemon import CORE_ENDPOINTS, AccessPolicy, ApiRequest, Context, Daemon, Endpoint, response
from overlord.daemon.errors import bad_request

from .manager import DEPLOYMENTS_KEY, DeployManager


def post_deploy(ctx: Context, req: ApiRequest) -> response.Reply:
    """post_deploy starts a deployment: one change, all its files or none."""
    files = req.json().value.get("files")
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise bad_request('cannot deploy: "files" must map names to text')
    deployer: DeployManager = ctx.overlord.deployer  # type: ignore[attr-defined]
    with ctx.state:
        try:
            chg = deployer.deploy(files)  # a conflict is the API's 409, with the change's id
        except ValueError as e:
            raise bad_request(str(e)) from None
        return response.async_(chg.id)


def get_deployed(ctx: Context, req: ApiRequest) -> response.Reply:
    """get_deployed lists the deployed files and their digests."""
    with ctx.state:
        return response.sync(ctx.state.get(DEPLOYMENTS_KEY, {}))


ENDPOINTS = [
    *CORE_ENDPOINTS,
    Endpoint("/v2/deploy", post=post_deploy),
    Endpoint("/v2/deployed", get=get_deployed),
]


def make_overlord(state_dir: Path, target: Path) -> Overlord:
    """make_overlord opens the deployer's state in state_dir and adds its manager."""
    o = Overlord(root=state_dir)
    o.deployer = DeployManager(o, target)  # type: ignore[attr-defined]
    return o


def main(argv: list[str] | None = None) -> int:
    """main runs the deployer's daemon until SIGTERM or SIGINT."""
    p = argparse.ArgumentParser(prog="deployer", description=__doc__.split("\n")[0])
    p.add_argument("--state-dir", type=Path, required=True, help="the state database and the socket")
    p.add_argument("--target", type=Path, required=True, help="the directory files are deployed into")
    p.add_argument("--group", default=None, help="members of this group may deploy, besides root")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args.state_dir.mkdir(parents=True, exist_ok=True)
    daemon = Daemon(lambda: make_overlord(args.state_dir, args.target),
                    socket_path=args.state_dir / "overlord.socket", endpoints=ENDPOINTS,
                    policy=AccessPolicy(args.group), info=lambda o: {"target": str(args.target)})
    return daemon.run()


if __name__ == "__main__":
    raise SystemExit(main())

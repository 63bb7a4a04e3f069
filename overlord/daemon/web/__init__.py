# SPDX-License-Identifier: GPL-3.0-or-later
"""The web view: a read-only page of the daemon showing the changes, their graphs and the warnings, live.

pages.py renders it (server-side HTML from templates/, a small script and a
stylesheet from static/, no build step and nothing fetched from the
network); the daemon serves it at /web/ on its socket, and on a loopback
TCP port when started with ``--web 127.0.0.1:PORT`` (port.py: what that port
lets through, and why it shows nobody more than the socket shows every
local user). docs/daemon.md, "The web view", tells the whole story.
"""

from __future__ import annotations

from .port import WEB_PORT_KEY, PortGuard, parse_address

__all__ = ["WEB_PORT_KEY", "PortGuard", "parse_address"]

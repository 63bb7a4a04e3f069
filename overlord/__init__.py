# SPDX-License-Identifier: GPL-3.0-or-later
"""overlord: the daemon and the command line of a system built on the engine.

snapd's daemon (a REST API on a Unix socket) and its `snap` command, for the
system of `managers`: `overlord.cli` is the `overlord` command.
"""

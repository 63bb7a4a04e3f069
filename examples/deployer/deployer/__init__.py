# SPDX-License-Identifier: GPL-3.0-or-later
"""deployer: an example daemon built on the engine, deploying files into a directory with do and undo."""

from __future__ import annotations

from .manager import DeployManager, TargetBusyError, default_retry, digest

__all__ = ["DeployManager", "TargetBusyError", "default_retry", "digest"]

# SPDX-License-Identifier: GPL-3.0-or-later
"""Exceptions raised by the managers; ManagerError (an engine.EngineError) is the base of all of them.

Conflicts between changes raise engine.ChangeConflictError.
"""

from __future__ import annotations

from engine import EngineError


class ManagerError(EngineError):
    """internal error: unexpected manager failure"""


class KeyFileError(ManagerError):
    """KeyFileError means a key cannot be read, written or used."""


class InvalidAssertionError(ManagerError):
    """InvalidAssertionError means a text is not a well-formed assertion of a known type."""


class AssertionVerifyError(ManagerError):
    """AssertionVerifyError means an assertion's signature chain does not reach the trusted root."""


class AssertionRevisionError(ManagerError):
    """AssertionRevisionError means a stored assertion is as new as, or newer than, the one given."""

    def __init__(self, message: str, *, current: int, used: int) -> None:
        self.current = current
        self.used = used
        super().__init__(message)


class InvalidSnapError(ManagerError):
    """InvalidSnapError means a snap file or directory is malformed or hostile."""


class StoreError(ManagerError):
    """StoreError means the store cannot be read."""


class SnapNotFoundError(ManagerError):
    """SnapNotFoundError means the store has no snap of that name."""


class SnapNotInstalledError(ManagerError):
    """SnapNotInstalledError means the snap (or that revision of it) is not installed."""


class SnapAlreadyInstalledError(ManagerError):
    """SnapAlreadyInstalledError means the snap is installed already."""


class NoUpdateAvailableError(ManagerError):
    """NoUpdateAvailableError means the store has no newer revision of the snap."""


class SnapOperationError(ManagerError):
    """SnapOperationError means the operation does not apply to the snap as it is now."""


class InterfaceError(ManagerError):
    """InterfaceError means a plug, a slot or a connection is not valid, not known or not possible."""


class NotConnectedError(InterfaceError):
    """NotConnectedError means there is no connection to disconnect."""


class InvalidSeedError(ManagerError):
    """InvalidSeedError means a seed directory is incomplete, malformed or does not verify."""


class AlreadySeededError(ManagerError):
    """AlreadySeededError means the system is seeded already: seeding again does nothing."""


class ConfigError(ManagerError):
    """ConfigError means a configuration key or value is not valid, or a path goes through a value that is not
    a document."""


class NoOptionError(ConfigError):
    """NoOptionError means a snap has no such configuration option (or no configuration at all)."""


class HookError(ManagerError):
    """HookError means a hook failed: it exited with an error, was killed, or could not be run."""


class TooEarlyError(ManagerError):
    """TooEarlyError means the system is not seeded yet: the operation waits for seeding (snapd's "too early")."""

# SPDX-License-Identifier: GPL-3.0-or-later
"""managers: managers built on the engine, one package per manager.

Each manager registers the task kinds it owns with the TaskRunner in its
constructor (do and undo side by side) and uses only ``from engine import``.
None is shipped yet.
"""

# SPDX-License-Identifier: GPL-3.0-or-later
"""The example's tests import `deployer` from this directory (pytest puts it on sys.path)."""

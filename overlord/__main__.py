# SPDX-License-Identifier: GPL-3.0-or-later
"""python -m overlord runs the overlord command."""

from overlord.entry import main

main()

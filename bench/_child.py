# SPDX-License-Identifier: GPL-3.0-or-later
"""python -m bench._child KIND JSON: run one workload and print ``BENCH-RESULT <json>``."""

from __future__ import annotations

import json
import sys
import traceback

from .common import RESULT_PREFIX, BenchError
from .workloads import WORKLOADS


def main(argv: list[str]) -> int:
    """main runs the workload named argv[0] with the keyword arguments in argv[1] (JSON)."""
    kind, params = argv[0], json.loads(argv[1])
    try:
        result = WORKLOADS[kind](**params)
    except BenchError as e:
        result = {"error": str(e)}
    except Exception as e:
        traceback.print_exc()
        result = {"error": f"{type(e).__name__}: {e}"}
    sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

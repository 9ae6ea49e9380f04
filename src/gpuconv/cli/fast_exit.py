"""Leave the process at once after ``gpuconv convert`` has finished its outputs.

Every output file is written and closed (atomic writes, the manifest opened per record) before
``convert`` returns, so tearing down the interpreter - freeing each module and object of a
process that holds hundreds of MB, joining nothing - only costs time: 0.32-0.37 s measured on the
build machine after a 40-file run, 0.13 s with a direct exit.  ``exit_now`` runs the atexit
handlers (multiprocessing, Dask and friends clean up there), flushes stdout and stderr, then
calls ``os._exit`` with the exit status ``sys.exit`` would have given.  Only the CLI entry point
uses it; ``GPUCONV_NO_FAST_EXIT=1`` turns it off.  tests/test_cold_start.py checks that the
files, the summary and the exit status are all there.
"""

from __future__ import annotations

import atexit
import os
import sys


def exit_code(code) -> int:
    """The status ``sys.exit(code)`` gives: None -> 0, an int as is, anything else printed -> 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def exit_now(code=0) -> None:
    status = exit_code(code)
    if os.environ.get("GPUCONV_NO_FAST_EXIT") == "1":
        sys.exit(status)
    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError, AttributeError):
                pass
        os._exit(status)

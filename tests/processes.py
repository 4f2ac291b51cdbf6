"""Waiting on a script started as a subprocess, for the tests that stop one part-way."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable


def wait_until(process: subprocess.Popen, ready: Callable[[], bool], what: str, timeout: float = 120) -> None:
    """Return once `ready()` holds; fail the test if the process ends first or `timeout` seconds pass
    (`what` names what was awaited)."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"no {what} within {timeout:g} s"
        time.sleep(0.02)

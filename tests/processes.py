"""Stopping a run part-way, for the tests that interrupt and resume one: in a subprocess (wait_until,
then a signal) or in this process (interrupt_at_call)."""

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


def interrupt_at_call(patch, module: object, name: str, call: int) -> None:
    """With pytest's `patch` (monkeypatch), make `module.name` raise KeyboardInterrupt, as Ctrl-C
    would, on its `call`-th call; the calls before run the function itself."""
    function, calls = getattr(module, name), []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt
        return function(*args, **kwargs)

    patch.setattr(module, name, interrupted)

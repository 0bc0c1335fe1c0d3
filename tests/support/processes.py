"""Stopping the processes a test starts, also when it fails."""

from __future__ import annotations

import signal
import subprocess
from typing import Any

from .waiting import scaled


def stop(process: subprocess.Popen[Any], seconds: float = 30) -> None:
    """SIGTERM `process` and wait up to `seconds` (scaled) for it to exit; kill it after that.
    Does nothing to a process that has exited."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(scaled(seconds))
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()

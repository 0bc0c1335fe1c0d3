"""Worker processes: the pool, the worker loop, leases and shutdown."""

from .pool import Pool
from .worker import Worker, WorkerSpec, run_worker

__all__ = ["Pool", "Worker", "WorkerSpec", "run_worker"]

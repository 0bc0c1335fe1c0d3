"""How worker processes are started: forked from a fork server that imported the app once.

A fresh interpreter that imports the user's module and agentexec costs seconds; paid by every
worker process (the `spawn` start method) it dominated start-up. Instead, the first pool of a
process starts multiprocessing's fork server with the modules of its handlers (and the
`__main__` script) preloaded, and every worker is forked from it: importing is paid once.

Forking is safe there, unlike forking the application process: the fork server is a
single-threaded process that runs no event loop and holds no connection of the application
(it is started by a clean exec, not forked from the caller), so a child never inherits a lock
held by another thread or a half-used socket. A module that starts threads or opens sockets
when it is imported breaks that; keep such work out of module level, as with any preloading
server. Where `forkserver` is unavailable (Windows), workers are spawned.

The fork server is shared by the whole process: the first pool's modules are preloaded, and
workers of later pools with other modules import those themselves once forked.
"""

from __future__ import annotations

import ast
import multiprocessing
import sys
from collections.abc import Iterable
from multiprocessing.context import ForkServerContext, SpawnContext
from pathlib import Path
from types import FrameType

from agentexec.errors import ConfigurationError

context: ForkServerContext | SpawnContext = (
    multiprocessing.get_context("forkserver")
    if "forkserver" in multiprocessing.get_all_start_methods()
    else multiprocessing.get_context("spawn")
)

FORKSERVER_HOOK = "agentexec.workers.forkserver"
"""Imported last by the fork server (see that module)."""


def preload(handler_modules: Iterable[str]) -> None:
    """Name the modules the fork server imports when it starts (no effect once it runs)."""
    if context.get_start_method() != "forkserver":
        return
    modules = sorted(set(handler_modules) - {"__main__", FORKSERVER_HOOK})
    context.set_forkserver_preload(
        ["__main__", *modules, "agentexec.workers.worker", FORKSERVER_HOOK]
    )


def check_main_guard(call: str) -> None:
    """Raise `ConfigurationError` when `call` (e.g. "pool.start()") runs while a script is
    imported in a way that will run it again in every worker process.

    Worker processes import the `__main__` script (they need its handlers); a script that
    starts the pool at module level, outside `if __name__ == "__main__":`, would start it
    again there. Caught in the script itself, before any process starts, and in the process
    that imports it for the workers.
    """
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or not path:
        return  # an interactive session or `python -c`: workers do not import it
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise ConfigurationError(_guard_message(call, path, None))
    frame = _top_level_frame(main.__dict__)
    if frame is None:
        return  # the script has finished its top level (e.g. a call from a thread)
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"), filename=path)
    except (OSError, SyntaxError, ValueError):
        return
    line = frame.f_lineno
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _tests_main(node.test):
            if node.lineno <= line <= (node.end_lineno or node.lineno):
                return
    raise ConfigurationError(_guard_message(call, path, line))


def _top_level_frame(main_globals: dict[str, object]) -> FrameType | None:
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_globals is main_globals and frame.f_code.co_name == "<module>":
            return frame
        frame = frame.f_back
    return None


def _tests_main(test: ast.expr) -> bool:
    for node in ast.walk(test):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            names = {o.id for o in operands if isinstance(o, ast.Name)}
            constants = {o.value for o in operands if isinstance(o, ast.Constant)}
            if "__name__" in names and "__main__" in constants:
                return True
    return False


def _guard_message(call: str, path: str, line: int | None) -> str:
    where = f"{path}, line {line}" if line is not None else path
    return (
        f"{call} runs at the top level of the script {where}, outside "
        '`if __name__ == "__main__":`. Worker processes import the script to find its task '
        "handlers, and would start the pool again. Put the code that starts the pool under "
        f'the guard:\n\n    if __name__ == "__main__":\n        {call}\n'
    )

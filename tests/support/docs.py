"""Running a docs page's examples as written: the page's `# name.py` Python blocks written to a
folder, the scripts run as processes (each stopped at the end, also when the test fails) in a
Redis key namespace of their own, and the output the page shows after a script.

`page` is a file name under docs/, such as "pipelines.md"."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from .processes import stop

DOCS = Path(__file__).parents[2] / "docs"
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", flags=re.S | re.M)


def page_text(page: str) -> str:
    return (DOCS / page).read_text()


def python_blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page_text(page), flags=re.S)


def script_name(block: str) -> str | None:
    """`name.py` (or `folder/name.py`) for a block whose first line is `# name.py ...`."""
    found = re.match(r"# ([\w/]+\.py)\b", block)
    return found.group(1) if found else None


def doc_files(page: str) -> dict[str, str]:
    """The page's Python blocks that start with a `# name.py` line, by file name."""
    return {name: b for b in python_blocks(page) if (name := script_name(b))}


def write_files(folder: Path, files: Mapping[str, str], *names: str) -> None:
    """Write `names` of `files` (all of them when none is named) into `folder`."""
    for name in names or tuple(files):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(files[name])


def output_after(page: str, name: str) -> str:
    """The first output block (a fence without a language) after the `# name` block."""
    text = page_text(page)
    start = text.index(f"# {name}\n")
    for fence in _FENCE.finditer(text):
        if fence.start() > start and not fence.group(1):
            return fence.group(2)
    raise AssertionError(f"{page}: no output block after the `# {name}` block")


def namespace_env(redis_url: str, prefix: str | None = None, **settings: str) -> dict[str, str]:
    """This environment plus `settings`, on `redis_url` under key prefix `prefix` (a fresh one
    when None)."""
    return {
        **os.environ,
        **settings,
        "AGENTEXEC_REDIS_URL": redis_url,
        "AGENTEXEC_KEY_PREFIX": prefix or f"axdocs-{uuid.uuid4().hex[:8]}",
    }


def _argv(command: Path | Sequence[str], cwd: Path | None) -> tuple[list[str], Path | None]:
    """`python script` in the script's folder for a path; else the command as given."""
    if isinstance(command, Path):
        return [sys.executable, command.name], command.parent
    return list(command), cwd


@contextmanager
def running(
    command: Path | Sequence[str], env: dict[str, str], cwd: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """The process of `command` (see `run_to_end`), stopped with SIGTERM (then killed) at the
    end."""
    argv, folder = _argv(command, cwd)
    process = subprocess.Popen(argv, cwd=folder, env=env)
    try:
        yield process
    finally:
        stop(process, 60)


def run_to_end(
    command: Path | Sequence[str], env: dict[str, str], timeout: float, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `command` and capture its output as text. A path runs `python script` in the
    script's folder; a list runs as given, in `cwd`."""
    argv, folder = _argv(command, cwd)
    return subprocess.run(
        argv, cwd=folder, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )

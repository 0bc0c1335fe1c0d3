"""Virtual environments created on demand with uv, cached by their requirements."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from .lineup import Entry

INSTALL_TIMEOUT = 900


class InstallError(Exception):
    pass


def _uv(*args: str) -> None:
    # `make install` puts uv into the system python3 (`python3 -m uv`), as the Makefile uses it.
    uv = shutil.which("uv")
    command = [uv] if uv else [shutil.which("python3") or sys.executable, "-m", "uv"]
    command += args
    result = subprocess.run(command, capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        raise InstallError(lines[-1] if lines else f"uv {args[0]} failed")


def _python(candidates: tuple[str, ...]) -> str:
    for candidate in candidates:
        path = shutil.which(candidate) if "/" not in candidate else candidate
        if path and Path(path).exists():
            return path
    return candidates[-1]  # a version request such as "3.12": uv looks for it


def ensure(root: Path, name: str, requirements: tuple[str, ...], pythons: tuple[str, ...]) -> Path:
    """The Python of venv `name` under `root` with `requirements` installed; built when
    missing or when its requirements changed. Raises InstallError with uv's last line."""
    venv = root / name
    python = venv / "bin" / "python"
    marker = venv / ".bench-requirements"
    wanted = "\n".join(requirements)
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    shutil.rmtree(venv, ignore_errors=True)
    _uv("venv", "--quiet", "--python", _python(pythons), str(venv))
    _uv("pip", "install", "--quiet", "--python", str(python), *requirements)
    marker.write_text(wanted)
    return python


def python_for(entry: Entry, root: Path) -> Path:
    if entry.venv is None:
        return Path(sys.executable)
    return ensure(root, entry.venv, entry.requirements, entry.pythons)

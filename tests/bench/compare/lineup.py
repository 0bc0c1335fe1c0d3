"""The tools compared, each with the environment its driver runs in.

Versions are pinned so that a run can be repeated; hiredis goes into every environment
that talks to Redis through redis-py, as it does into ours.
"""

from __future__ import annotations

from dataclasses import dataclass

PYTHON_312 = ("/root/.pyenv/versions/3.12.1/bin/python3.12", "python3.12", "3.12")


@dataclass(frozen=True)
class Entry:
    name: str
    driver: str
    """File name under peers/."""
    venv: str | None
    """Directory name under the venv cache; None runs the driver with the project's Python."""
    requirements: tuple[str, ...] = ()
    pythons: tuple[str, ...] = ("python3",)
    """Interpreters to try for the venv, first found wins."""
    tracking: bool = False
    """Runs with activity tracking to SQL (BENCH_DATABASE_URL)."""
    ours: bool = False


LINEUP = (
    Entry("agentexec (this)", "ours_peer.py", None, ours=True),
    Entry("agentexec (this) + SQL", "ours_peer.py", None, tracking=True, ours=True),
    Entry(
        "agentexec 0.3.0 + SQL",
        "agentexec030_peer.py",
        "agentexec-0.3.0",
        ("agentexec==0.3.0", "aiosqlite==0.22.1", "psycopg[binary]==3.3.9", "hiredis==3.5.0"),
        pythons=PYTHON_312,
        tracking=True,
    ),
    Entry(
        "taskiq (stream broker)",
        "taskiq_peer.py",
        "taskiq",
        ("taskiq==0.13.0", "taskiq-redis==1.2.4", "hiredis==3.5.0"),
    ),
    Entry("arq", "arq_peer.py", "arq", ("arq==0.28.0", "hiredis==3.5.0")),
    Entry("Dramatiq", "dramatiq_peer.py", "dramatiq", ("dramatiq[redis]==2.2.1", "hiredis==3.5.0")),
    Entry(
        "SAQ",
        "saq_peer.py",
        "saq",
        # saq 0.26.4 imports typing_extensions without declaring it
        ("saq[redis]==0.26.4", "typing-extensions==4.16.0", "hiredis==3.5.0"),
    ),
    Entry("streaQ", "streaq_peer.py", "streaq", ("streaq==7.2.0",)),
)

CHART_REQUIREMENTS = ("matplotlib==3.11.2",)

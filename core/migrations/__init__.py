"""Alembic revisions of agentexec's tables, on their own branch labelled `agentexec`.

Add this package to your Alembic `version_locations` (`agentexec:migrations`), pass
`process_revision_directives` to `context.configure()` in your `env.py`, and run
`alembic upgrade heads`; see docs/activity.md. `LOCATION` is the same as a path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["LOCATION", "process_revision_directives"]

LOCATION = str(Path(__file__).parent)
"""The directory holding the revision scripts, for `version_locations`."""

_BRANCH = "agentexec"


def process_revision_directives(context: Any, revision: Any, directives: list[Any]) -> None:
    """Keep your own revisions out of agentexec's branch and out of the installed package.

    A new revision made without `--head` extends your own history: the one head that is not
    agentexec's, or, when you have none yet, a new root in your first version location. So
    `alembic revision --autogenerate` works beside the shipped branch without `--head`,
    `--branch-label` or `--version-path`, and never writes into `site-packages`. An explicit
    `--head` or `--version-path` is left as given. Pass this function as
    `context.configure(..., process_revision_directives=process_revision_directives)`.
    """
    from alembic.script import ScriptDirectory
    from alembic.util import coerce_resource_to_filename

    if not directives:
        return
    script = directives[0]
    if getattr(script, "head", None) not in (None, "head"):
        return
    scripts = ScriptDirectory.from_config(context.config)
    shipped = {
        rev.revision: Path(rev.path).resolve().parent
        for rev in scripts.iterate_revisions(_BRANCH + "@head", "base")
    }
    heads = [rev for rev in scripts.get_revisions("heads") if rev and rev.revision not in shipped]
    if len(heads) > 1:
        return  # several heads of your own: alembic asks which, as usual
    script.head = heads[0].revision if heads else "base"
    if script.version_path is None and len(scripts.version_locations or ()) > 1:
        ours = {Path(LOCATION).resolve(), *shipped.values()}
        script.version_path = next(
            (
                str(path)
                for path in map(coerce_resource_to_filename, scripts.version_locations or ())
                if path.resolve() not in ours
            ),
            None,
        )

"""The Lua scripts, loaded by name from `agentexec/lua/<name>.lua`.

Each script makes a multi-key step atomic without MULTI, so that many of them can share one
pipeline round trip (see `Batcher`). A script's header documents every KEYS[n] and ARGV[n] it
uses and what it returns; a line `--@include <name>` is replaced by the shared functions of
`lua/lib/<name>.lua`. The Broker (`agentexec.broker`, `agentexec.consumer`) runs them.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from importlib import resources

_INCLUDE = re.compile(r"^--@include (\w+)$", re.MULTILINE)


@dataclass(frozen=True)
class Script:
    name: str
    source: str
    sha: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())


def source(name: str) -> str:
    """The text of `lua/<name>.lua` (or `lua/lib/<name>.lua`), as stored."""
    return resources.files("agentexec").joinpath("lua", f"{name}.lua").read_text()


def load(name: str) -> Script:
    """Script `name` with its includes expanded."""

    def include(match: re.Match[str]) -> str:
        return source(f"lib/{match.group(1)}").rstrip("\n")

    return Script(name, _INCLUDE.sub(include, source(name)))


ENQUEUE = load("enqueue")
ENQUEUE_LATER = load("enqueue_later")
ENQUEUE_PIPELINE = load("enqueue_pipeline")
TRACK = load("track")
START = load("start")
READ = load("read")
DEFER = load("defer")
RETRY = load("retry")
PROMOTE = load("promote")
CANCEL = load("cancel")
FINISH = load("finish")
TRANSITION = load("transition")
DEAD_LETTER = load("dead_letter")
APPEND_HELD = load("append_held")
APPEND_KNOWN = load("append_known")
CHECKPOINT_HELD = load("checkpoint_held")
SESSION_CHANGE = load("session_change")
SESSION_RESTORE = load("session_restore")
RENEW = load("renew")
LOCK = load("lock")
UNLOCK = load("unlock")
UNPARK = load("unpark")
REQUEUE_HELD = load("requeue_held")
REMOVE_IDLE_CONSUMERS = load("remove_idle_consumers")
PROJECTOR_RENEW = load("projector_renew")
PROJECTOR_RELEASE = load("projector_release")
PROJECTOR_READ = load("projector_read")
LIFT_LOG = load("lift_log")
TRIM_LOG = load("trim_log")

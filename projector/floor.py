"""The log's floor: new events never get ids at or below what the projector has committed.

Redis gives an appended entry an id from its clock, above the stream's last id. When Redis
comes back without the log (FLUSHALL, a new server, an old snapshot) and its clock is behind
the ids the projector committed, new events get ids below the checkpoint: a consumer group
created at the checkpoint never delivers them, and the archive, kept in id order, would hold
them before events that happened earlier.

So the projector, when it takes the log over and finds it behind its checkpoint, lifts it
(`lift`): one script (`Broker.lift_log`) raises the stream's last id to the checkpoint
(XSETID, creating the stream and group first when missing), so later appends get ids above
it, and appends again, above it and in their order, the entries that arrived below it
meanwhile and are not in the archive, deleting the originals. Those keep their fields (the
same bytes), so a worker that looks for the event its lost reply appended still finds it;
they get new ids, so the log, the archive and every feed keep one order. A batch that holds
an entry at or below the checkpoint that is not archived (the log was restored while this
projector held its lease) has that entry lifted the same way instead of skipped (see
`Projector._apply`).
"""

from __future__ import annotations

import asyncio

from sqlalchemy import Engine

from agentexec.broker import Broker
from agentexec.positions import ORIGIN

from .archive import Archive

__all__ = ["lift"]

_PAGE = 10_000


async def lift(
    broker: Broker,
    engine: Engine,
    floor: str,
    *,
    after: str | None = None,
    ids: list[str] | None = None,
    partition: int = 0,
) -> tuple[bool, list[tuple[str, str]]]:
    """Raise the last id of `partition`'s log to `floor` (`Broker.lift_log`), and append again
    above it the entries below it that the partition's archive does not hold: those after
    `after` (every one when None and `ids` is None too), or those of `ids`. Returns whether
    the last id was raised, and the (old, new) ids of the entries appended again, in order."""
    moves: list[str] = []
    since = ""
    if ids is None:
        since = after or str(ORIGIN)
        while True:
            found = await broker.log_ids(since, floor, _PAGE, partition)
            if not found:
                break
            known = await asyncio.to_thread(Archive(engine, partition=partition).archived, found)
            moves += [i for i in found if i not in known]
            since = found[-1]
    else:
        moves = ids
    return await broker.lift_log(floor, since, moves, partition)

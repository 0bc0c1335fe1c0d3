"""The tenant rules without Redis: what a tenant may be, how `tenant=` and
`metadata["tenant"]` combine and inherit, and which events `encode` stamps with the tenant
of the task served in its context."""

from __future__ import annotations

import uuid

import msgspec
import pytest

from agentexec import events, tenants


def test_check_tenant_names_the_value_and_the_rule() -> None:
    for good in ("acme", "org:42", "team@example.com", "a.b-c_d", "x" * 128):
        assert tenants.check_tenant(good) == good
    for bad in ("", " acme", "a/b", "x" * 129, 'a"b', None, 42):
        with pytest.raises(ValueError, match=r"not a usable tenant: use 1 to 128 characters"):
            tenants.check_tenant(bad)


def test_resolve_combines_and_inherits() -> None:
    assert tenants.resolve(None, None, "w") == (None, None)
    assert tenants.resolve("acme", None, "w") == ("acme", {"tenant": "acme"})
    assert tenants.resolve(None, {"k": 1, "tenant": "acme"}, "w") == (
        "acme",
        {"k": 1, "tenant": "acme"},
    )
    assert tenants.resolve("acme", {"tenant": "acme"}, "w")[0] == "acme"
    with pytest.raises(ValueError, match=r"w: tenant='acme' and metadata\['tenant'\]='globex'"):
        tenants.resolve("acme", {"tenant": "globex"}, "w")
    with tenants.serving(uuid.uuid4(), None, "acme"):
        assert tenants.current() == "acme"
        assert tenants.resolve(None, {"k": 1}, "w") == ("acme", {"k": 1, "tenant": "acme"})
        assert tenants.resolve("globex", None, "w")[0] == "globex"  # given wins
        assert tenants.resolve(None, None, "w", inherit=False) == (None, None)
    assert tenants.current() is None


def decoded(event: events.Event) -> events.AnyEvent:
    return events.decode(events.encode(event))


def test_encode_stamps_the_served_tasks_events_only() -> None:
    task, parent, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    with tenants.serving(task, parent, "acme"):
        assert decoded(events.TaskProgress(agent_id=task, task_name="t")).tenant == "acme"
        assert decoded(events.TaskCompleted(agent_id=parent, task_name="p")).tenant == "acme"
        assert decoded(events.TaskProgress(agent_id=other, task_name="o")).tenant is None
        tracked = events.TrackerIncremented(
            agent_id=other, task_name="r", tracker="r", batch_id="b"
        )
        assert decoded(tracked).tenant == "acme"
        child = events.TaskQueued(agent_id=other, task_name="c", metadata={"tenant": "globex"})
        assert decoded(child).tenant == "globex"  # a queued task's own, from its metadata
        given = events.TaskProgress(agent_id=task, task_name="t", tenant="org:1")
        assert decoded(given).tenant == "org:1"
    assert decoded(events.TaskProgress(agent_id=task, task_name="t")).tenant is None
    bad = events.TaskProgress(agent_id=task, task_name="t", tenant='a"b')
    assert decoded(bad).tenant is None  # never recorded: the scripts rely on it


def test_the_tenant_follows_the_task_name_in_the_json() -> None:
    event = events.TaskProgress(agent_id=uuid.uuid4(), task_name="t", tenant="acme")
    data = events.encode(event)
    assert b'"task_name":"t","tenant":"acme",' in data
    old = msgspec.json.encode(
        {"type": "task.progress", "agent_id": str(event.agent_id), "task_name": "t"}
    )
    assert events.decode(old).tenant is None  # events recorded before tenants still decode

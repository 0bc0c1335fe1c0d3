"""Alembic revisions of agentexec's tables (see docs/activity.md)."""

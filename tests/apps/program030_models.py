"""The context and result models of `tests.apps.program030`, in a module of their own: a
process that imports only these (an API process that enqueues by name) registers no task."""

from __future__ import annotations

from pydantic import BaseModel


class ResearchContext(BaseModel):
    company: str


class Report(BaseModel):
    company: str
    findings: list[str]


class Summary(BaseModel):
    text: str

"""Deadlines in tests stretch with the machine's load (tests/support/waiting.py)."""

from __future__ import annotations

import os

import pytest

from tests.support import waiting
from tests.support.waiting import FACTOR_VARIABLE, scaled, timeout_factor, wait_for


def _load(monkeypatch: pytest.MonkeyPatch, load: float, cores: int = 2) -> None:
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    monkeypatch.setattr(waiting, "_cores", lambda: cores)


def test_a_quiet_machine_waits_as_written(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FACTOR_VARIABLE, raising=False)
    _load(monkeypatch, 0.0)
    assert timeout_factor() == 1
    assert scaled(10) == 10


def test_the_load_average_per_core_stretches_deadlines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FACTOR_VARIABLE, raising=False)
    _load(monkeypatch, 8.0, cores=2)
    assert timeout_factor() == 5
    _load(monkeypatch, 100.0, cores=2)
    assert timeout_factor() == waiting.MAX_LOAD_FACTOR


def test_the_variable_is_a_floor(monkeypatch: pytest.MonkeyPatch) -> None:
    _load(monkeypatch, 2.0, cores=2)
    monkeypatch.setenv(FACTOR_VARIABLE, "3")
    assert timeout_factor() == 3
    monkeypatch.setenv(FACTOR_VARIABLE, "0.5")
    assert timeout_factor() == 2
    monkeypatch.setenv(FACTOR_VARIABLE, "20")
    assert timeout_factor() == 20  # beyond the load's cap: the user asked for it


@pytest.mark.parametrize("text", ["fast", "0", "-1"])
def test_a_bad_factor_names_the_variable(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setenv(FACTOR_VARIABLE, text)
    with pytest.raises(ValueError, match=rf"{FACTOR_VARIABLE}='{text}' is not a positive number"):
        timeout_factor()


def test_a_wait_that_runs_out_says_how_long_it_waited(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FACTOR_VARIABLE, "2")
    _load(monkeypatch, 0.0)
    with pytest.raises(AssertionError, match=r"after 0\.1s \(0\.05s scaled by load\).*nothing"):
        wait_for(lambda: False, timeout=0.05, what="nothing")
    assert wait_for(lambda: 42, timeout=0.05) == 42

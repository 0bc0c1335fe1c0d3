"""Declaring runners: lazy exports, prompts, tools, and setup mistakes reported at once."""

from __future__ import annotations

import subprocess
import sys
import uuid
from typing import Any

import pytest

import agentexec as ax


def test_runners_are_exported_lazily() -> None:
    code = (
        "import sys, agentexec as ax; before = 'agents' in sys.modules; "
        "base = ax.BaseAgentRunner; between = 'agents' in sys.modules; "
        "runner = ax.OpenAIRunner; print(before, between, 'agents' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "True"]
    assert "OpenAIRunner" in ax.__all__ and "BaseAgentRunner" in ax.__all__
    with pytest.raises(AttributeError, match="no attribute 'NoSuchThing'"):
        ax.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018


def test_prompts_and_the_report_status_tool() -> None:
    runner = ax.OpenAIRunner(uuid.uuid4())
    assert "report_status" in runner.prompts.report_status
    assert runner.tools.report_status.name == "report_status"
    schema = runner.tools.report_status.params_json_schema
    assert schema["required"] == ["message", "percentage"]
    assert schema["properties"]["percentage"]["type"] == "integer"
    custom = ax.OpenAIRunner(
        str(uuid.uuid4()),
        max_turns_recovery=True,
        wrap_up_prompt="Please summarize your findings.",
        report_status_prompt="Use report_status after each step.",
    )
    assert custom.prompts.report_status == "Use report_status after each step."
    assert custom.prompts.wrap_up == "Please summarize your findings."
    assert custom.max_turns_recovery is True
    # Each runner's tool is bound to its own agent id.
    assert custom.tools.report_status is not runner.tools.report_status


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"agent_id": "not-a-uuid"}, r"agent_id='not-a-uuid'\): not a UUID"),
        ({"wrap_up_prompt": "  "}, r"wrap_up_prompt='  '\): use a non-empty"),
        ({"report_status_prompt": ""}, r"report_status_prompt=''\)"),
        ({"wrap_up_turns": 0}, r"wrap_up_turns=0\): use a whole number >= 1"),
        ({"redact": "yes"}, r"redact='yes'\): pass a function"),
    ],
)
def test_setup_mistakes_are_reported_when_the_runner_is_made(
    kwargs: dict[str, Any], match: str
) -> None:
    kwargs = {"agent_id": uuid.uuid4(), **kwargs}
    with pytest.raises(ax.ConfigurationError, match=match):
        ax.OpenAIRunner(**kwargs)


def test_base_agent_runner_is_abstract() -> None:
    with pytest.raises(TypeError, match="abstract"):
        ax.BaseAgentRunner(uuid.uuid4())  # type: ignore[abstract]


def test_without_the_agents_sdk_the_error_says_how_to_install_it() -> None:
    code = (
        "import sys; sys.modules['agents'] = None\n"
        "import agentexec as ax\n"
        "try:\n    ax.OpenAIRunner\nexcept ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'agentexec[openai]'" in out.stdout

"""The README's two set-up commands stay true: CI runs the test command verbatim."""

from __future__ import annotations

import re

from tests.conftest import REPO_ROOT


def readme_commands() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text()
    setup = text.split("## Set up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.+?)\n```", setup, flags=re.S)


def test_readme_has_exactly_two_setup_commands():
    commands = readme_commands()
    assert len(commands) == 2 and all("\n" not in c for c in commands)
    assert commands[0].endswith("edgekit demo") and commands[1].endswith("python -m pytest")


def test_ci_runs_the_readme_test_command_verbatim():
    assert readme_commands()[1] in (REPO_ROOT / ".ci" / "run").read_text()

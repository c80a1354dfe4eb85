"""The README's tour runs as written, from a scratch directory (each command at miniature size)."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).parents[1] / "README.md"


def tour_commands() -> list[str]:
    text = README.read_text()
    section = text[text.index("## A five-command tour") :]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_the_tour_is_five_percontrast_commands():
    commands = tour_commands()
    assert len(commands) == 5 and all(c.startswith("percontrast ") for c in commands)


@pytest.mark.slow
def test_every_tour_command_runs_as_written_from_a_scratch_directory(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PERCONTRAST_OUTPUTS"}  # the default outputs/ here
    for command in tour_commands():
        args = shlex.split(command)[1:]
        result = subprocess.run(
            [sys.executable, "-m", "percontrast_cli.cli", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, (command, result.stderr[-3000:])
        assert "Traceback" not in result.stderr, command
    assert (tmp_path / "outputs" / "reports" / "tour" / "report.md").is_file()
    assert result.stdout.strip(), "inspect.show=prompt printed no prompt"

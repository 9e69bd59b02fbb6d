from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_ci_runs_the_readme_test_command() -> None:
    readme = (REPO / "README.md").read_text().splitlines()
    ci_line = (REPO / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci_line in readme, "the last line of .ci/run must be the README's test command, verbatim"
    assert ci_line.endswith("python -m pytest")


def test_ci_runs_every_command_line_verbatim_from_the_readme() -> None:
    readme = (REPO / "README.md").read_text().splitlines()
    lines = (REPO / ".ci" / "run").read_text().strip().splitlines()
    body = lines[lines.index('cd "$(dirname "$0")/.."') + 1 :]
    commands = [line for line in body if line and not line.startswith("#") and line != "rm -rf .venv-monailabel"]
    assert len(commands) == 2 and "pytest -m monailabel" in commands[0], commands
    for command in commands:
        assert command in readme, f"this line of .ci/run must be in the README verbatim: {command}"


def test_readme_starts_with_the_demo_command() -> None:
    text = (REPO / "README.md").read_text()
    demo = next(line for line in text.splitlines() if "monai.bundle run" in line)
    assert demo.startswith("python3 -m venv .venv") and "bundles/la/configs/demo.json" in demo
    assert text.index(demo) < text.index("python -m pytest")

"""The project keeps its promises: lint-clean code and a CI that runs the README's test command."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    return re.findall(
        r"^pip install -r requirements[-\w]*\.txt && .+$", (ROOT / "README.md").read_text(), re.M
    )


def test_readme_gives_one_command_for_the_demo_and_one_for_the_tests():
    commands = readme_commands()
    assert commands == [
        "pip install -r requirements.txt && python demo_script.py",
        "pip install -r requirements-dev.txt && python -m pytest",
    ]


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "grep -E '^pip install -r requirements-dev\\.txt && ' README.md" in ci
    assert 'eval "$test_command"' in ci


def test_requirements_name_what_the_code_imports():
    runtime = (ROOT / "requirements.txt").read_text()
    for package in ("torch", "numpy", "matplotlib", "tqdm", "jupyter"):
        assert re.search(rf"^{package}\b", runtime, re.M), package
    development = (ROOT / "requirements-dev.txt").read_text()
    assert "-r requirements.txt" in development
    for package in ("pytest", "hypothesis", "nbclient", "ruff"):
        assert re.search(rf"^{package}\b", development, re.M), package


def test_ruff_finds_nothing_to_fix():
    check = subprocess.run([sys.executable, "-m", "ruff", "check", str(ROOT)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_code_is_ruff_formatted():
    command = [sys.executable, "-m", "ruff", "format", "--check", str(ROOT)]
    check = subprocess.run(command, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr

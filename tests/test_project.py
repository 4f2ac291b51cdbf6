"""The project keeps its promises: lint-clean code and a CI that runs the README's test command."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_ci_runs_the_readme_test_command_in_a_fresh_virtual_environment():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "grep -E '^pip install -r requirements-dev\\.txt && ' README.md" in ci
    # A fresh environment outside the checkout, so that CI installs the newest versions allowed.
    venv_line = ci.index('python3 -m venv "$venv"')
    assert ci.index("venv=$(mktemp -d") < venv_line < ci.index('source "$venv/bin/activate"')
    assert ci.index('source "$venv/bin/activate"') < ci.index('eval "$test_command"')


def committed_json_files() -> list[Path]:
    return sorted([*(ROOT / "figures").glob("*.json"), *(ROOT / "benchmarks").glob("*.json")])


def machine_blocks(results: dict) -> list[dict]:
    """What produced a committed JSON: its own machine block, or, in a study whose configurations can be
    re-run one at a time (length_generalization.json), each configuration's."""
    if "machine" in results:
        return [results["machine"]]
    return [entry["machine"] for entry in results["configurations"]]


@pytest.mark.parametrize("path", committed_json_files(), ids=lambda path: path.name)
def test_every_committed_json_records_what_produced_it(path):
    results = json.loads(path.read_text())
    blocks = machine_blocks(results)
    assert blocks, f"{path.name} records no machine"
    for block in blocks:
        assert re.fullmatch(r"\d+\.\d+\.\d+\S*", block["torch"]), (path.name, block)
        assert re.fullmatch(r"3\.\d+\.\d+\S*", block["python"]), (path.name, block)
        assert block.get("platform") or block.get("cpu"), (path.name, block)


def test_committed_json_files_are_the_ones_the_test_knows():
    names = {path.name for path in committed_json_files()}
    assert {"binary_counting.json", "sine_wave.json", "variants.json", "results.json"} <= names


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

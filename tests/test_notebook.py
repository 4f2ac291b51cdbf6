"""demo.ipynb runs top to bottom without error, and the committed copy carries the outputs of such a run."""

from __future__ import annotations

import base64
import struct
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "demo.ipynb"
SECONDS_PER_CELL = 300  # the slowest cell trains for well under a minute on a 2-core CPU
MAX_FIGURE_WIDTH_PX = 1100  # 10 inches at 110 dpi: a figure that fits a notebook column


def code_cells(notebook) -> list:
    return [cell for cell in notebook.cells if cell.cell_type == "code" and cell.source.strip()]


def test_committed_notebook_was_executed_top_to_bottom_with_outputs_in_every_code_cell():
    cells = code_cells(nbformat.read(NOTEBOOK, as_version=4))
    assert cells, "demo.ipynb has no code cells"
    missing = [index for index, cell in enumerate(cells) if not cell.outputs]
    assert not missing, f"code cells without outputs (commit the executed notebook): {missing}"
    counts = [cell.execution_count for cell in cells]
    assert counts == list(range(1, len(cells) + 1)), f"not one run from top to bottom: {counts}"
    errors = [
        index
        for index, cell in enumerate(cells)
        if any(output.output_type == "error" for output in cell.outputs)
    ]
    assert not errors, f"the committed notebook holds errors in code cells {errors}"


def test_notebook_runs_top_to_bottom_without_error():
    # Executed in memory: the committed file is read, never written.
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=SECONDS_PER_CELL,
        kernel_name="python3",
        resources={"metadata": {"path": str(ROOT)}},
    )
    try:
        client.execute()
    except CellExecutionError as error:
        pytest.fail(f"demo.ipynb failed to run:\n{error}")
    assert all(cell.outputs for cell in code_cells(notebook))


def png_width(encoded: str) -> int:
    """The width in pixels of a base64 PNG, read from its IHDR header."""
    header = base64.b64decode(encoded[:64])
    return struct.unpack(">I", header[16:20])[0]


def test_every_figure_fits_a_notebook_column():
    cells = code_cells(nbformat.read(NOTEBOOK, as_version=4))
    widths = {
        (index, png_width(output.data["image/png"]))
        for index, cell in enumerate(cells)
        for output in cell.outputs
        if "image/png" in output.get("data", {})
    }
    assert widths, "the notebook shows no figure"
    too_wide = sorted((index, width) for index, width in widths if width > MAX_FIGURE_WIDTH_PX)
    assert not too_wide, f"(code cell, width in px) wider than {MAX_FIGURE_WIDTH_PX} px: {too_wide}"


MAX_CODE_CELL_LINES = 15  # a code cell is read at a glance; the story is in the markdown


def non_blank_lines(cells: list) -> int:
    return sum(1 for cell in cells for line in cell.source.splitlines() if line.strip())


def test_the_notebook_tells_its_story_in_markdown_with_short_code_cells():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    long_cells = [
        (index, len(cell.source.splitlines()))
        for index, cell in enumerate(notebook.cells)
        if cell.cell_type == "code" and len(cell.source.splitlines()) > MAX_CODE_CELL_LINES
    ]
    assert not long_cells, f"(cell, lines) of code cells over {MAX_CODE_CELL_LINES} lines: {long_cells}"
    markdown = non_blank_lines([cell for cell in notebook.cells if cell.cell_type == "markdown"])
    code = non_blank_lines(code_cells(notebook))
    assert markdown > code, f"{markdown} lines of markdown against {code} of code"


def test_the_notebook_has_exercises_and_a_diagram_of_the_cell():
    cells = nbformat.read(NOTEBOOK, as_version=4).cells
    text = "\n".join(cell.source for cell in cells if cell.cell_type == "markdown")
    assert text.count("**Exercise ") >= 3
    assert "c_{t-1} ──" in text and "──▶ c_t" in text  # the cell state as the line through the cell


def test_the_step_through_view_leaves_a_static_figure():
    cells = code_cells(nbformat.read(NOTEBOOK, as_version=4))
    views = [cell for cell in cells if "StepThrough(" in cell.source]
    assert views, "the notebook has no step-through view"
    bundles = [output.data for cell in views for output in cell.outputs if "data" in output]
    assert any("image/png" in data and "application/vnd.jupyter.widget-view+json" in data for data in bundles)

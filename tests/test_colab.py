"""The Colab notebook runs top to bottom (its QUICK sizes), as a user would run it."""

import pathlib

import nbformat
import pytest

NOTEBOOK = pathlib.Path(__file__).parent.parent / "colabs" / "program_explorer.ipynb"


def test_program_explorer_executes():
  nbclient = pytest.importorskip("nbclient")
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbclient.NotebookClient(nb, timeout=600, kernel_name="python3").execute()
  outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
  assert "one shared schedule of" in outputs
  assert "full                      0-29" in outputs
  assert "oracle_accuracy" in outputs
  assert not any(o.get("output_type") == "error" for c in nb.cells if c.cell_type == "code"
                 for o in c.get("outputs", []))
  # Every cell that draws shows its figure inline (a library that switched matplotlib's backend would hide it).
  plotting = [c for c in nb.cells if c.cell_type == "code" and "plt." in c.source]
  assert len(plotting) >= 2
  for cell in plotting:
    images = [o for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
    assert images, f"no image from the cell starting {cell.source.splitlines()[0]!r}"

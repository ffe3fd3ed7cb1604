"""The Colab quick-start notebook: valid JSON whose code compiles, and it runs on CPU."""

import json
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "colab_quickstart.ipynb"
GRIDS = ("x_to_y", "y_to_x", "x_to_y_fixed_noise", "y_to_x_fixed_noise")
NEEDS = "pip install -e '.[notebook]' to execute the notebook"


def python_source(cell) -> str:
  """A code cell's source with IPython's `!shell` / `%magic` lines replaced by `pass`."""
  source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
  lines = []
  for line in source.splitlines():
    stripped = line.lstrip()
    indent = line[:len(line) - len(stripped)]
    lines.append((indent + "pass") if stripped.startswith(("!", "%")) else line)
  return "\n".join(lines)


def test_notebook_is_valid_with_outputs_cleared_and_its_code_compiles():
  text = NOTEBOOK.read_text()
  notebook = json.loads(text)
  try:
    import nbformat
  except ImportError:
    nbformat = None
  if nbformat is not None:
    nbformat.validate(nbformat.reads(text, as_version=nbformat.NO_CONVERT))
  cells = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
  assert cells
  for index, cell in enumerate(cells):
    compile(python_source(cell), f"{NOTEBOOK.name}, code cell {index}", "exec")
    assert not cell["outputs"] and cell["execution_count"] is None, (
        f"{NOTEBOOK.name}: code cell {index} is committed with outputs; clear them")


@pytest.mark.slow
def test_notebook_runs_top_to_bottom_on_cpu(tmp_path, monkeypatch):
  nbclient = pytest.importorskip("nbclient", reason=NEEDS)
  nbformat = pytest.importorskip("nbformat", reason=NEEDS)
  pytest.importorskip("ipykernel", reason=NEEDS)
  # A kernelspec that runs this interpreter: the kernel then imports this environment's
  # packages whatever `python` on PATH is.
  kernel_dir = tmp_path / "jupyter" / "kernels" / "i2i-notebook-test"
  kernel_dir.mkdir(parents=True)
  (kernel_dir / "kernel.json").write_text(json.dumps({
      "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
      "display_name": "i2i-jax test", "language": "python"}))
  monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
  workdir = tmp_path / "run"
  monkeypatch.setenv("I2I_NOTEBOOK_WORKDIR", str(workdir))
  monkeypatch.setenv("I2I_NOTEBOOK_STEPS", "4")

  notebook = nbformat.read(NOTEBOOK, as_version=4)
  # Started in notebooks/, as a local Jupyter would be: the notebook finds the checkout.
  client = nbclient.NotebookClient(notebook, kernel_name="i2i-notebook-test", timeout=600,
                                   resources={"metadata": {"path": str(NOTEBOOK.parent)}})
  client.execute()  # Raises CellExecutionError, naming the cell, if one fails.

  cells = {cell.id: cell for cell in notebook.cells if cell.cell_type == "code"}
  errors = [o for cell in cells.values() for o in cell.outputs if o.output_type == "error"]
  assert not errors
  for name in GRIDS:
    assert list((workdir / "samples").glob(f"{name}_*.png")), name
  assert (workdir / "translations" / "mnist_test_digit.png").is_file()
  images_shown = {cell_id: sum("image/png" in o.get("data", {}) for o in cell.outputs)
                  for cell_id, cell in cells.items()}
  assert images_shown["grids"] == len(GRIDS)
  assert images_shown["upload"] == 1
  assert images_shown["translate"] == 1

"""What the quality benchmarks share: flags, config files, result tables and JSON."""

import importlib.util
import json
import os
import pathlib
import tempfile
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
from absl import flags, logging

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
RESULTS_FILE = "results.json"

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The flags every quality benchmark has; called by the scripts' `__main__` only, so
  importing them (tests) defines no flags."""
  flags.DEFINE_string("workdir", None, "Where the runs, their TensorBoard events and "
                      f"{RESULTS_FILE} go; default a new temporary folder. Re-using a "
                      "workdir resumes (finished runs are only re-evaluated).")
  flags.DEFINE_bool("quick", False, "CPU-sized: tiny step counts and sizes, a few minutes on "
                    "two cores; checks the plumbing, not the claim.")
  flags.DEFINE_integer("seed", 0, "Seed of every run (config.seed).")


def workdir_from_flags(name: str) -> str:
  return FLAGS.workdir or tempfile.mkdtemp(prefix=f"quality_{name}_")


def warn_if_cpu_without_quick(quick: bool) -> None:
  if not quick and jax.default_backend() == "cpu":
    logging.warning("The default sizes are meant for a GPU; on CPU this takes hours. "
                    "Use --quick for a CPU-sized run.")


def load_config(relative_path: str) -> ml_collections.ConfigDict:
  """`get_config()` of a file under the repository root, e.g. "configs/digits_demo.py".

  configs/ is not an installed package, and scripts run by path do not have the
  repository root on sys.path.
  """
  path = REPO_ROOT / relative_path
  spec = importlib.util.spec_from_file_location(path.stem, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  """A plain-text table; floats get 3 decimals, None prints as "-"."""

  def cell(value) -> str:
    if value is None:
      return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)

  cells = [list(headers)] + [[cell(v) for v in row] for row in rows]
  widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
  lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
  lines.insert(1, "  ".join("-" * w for w in widths))
  return "\n".join(lines)


def report(workdir: str, results: dict, quick: bool, format_results) -> None:
  """Writes results.json and prints the benchmark's table: each script's last step."""
  results["quick"] = quick
  path = write_results(workdir, results)
  print(format_results(results))
  print(f"wall time {results['wall_s']:.0f} s; results in {path}")
  logging.info("Done: %s", path)


def write_results(workdir: str, results: dict) -> str:
  path = os.path.join(workdir, RESULTS_FILE)
  with open(path, "w") as f:
    json.dump(results, f, indent=2, sort_keys=True)
    f.write("\n")
  return path

"""What the quality benchmarks share: flags, presets, seeds, config files, result tables
and JSON, the mean ± std over seeds, and the digit domains they score against."""

import copy
import importlib.util
import json
import os
import pathlib
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import app, flags, logging

from i2i_jax.data import domains, pipeline

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
RESULTS_FILE = "results.json"
# cpu: meant to run a whole table on two CPU cores within an hour, long enough to show
# the claim; gpu: the full sizes for one GPU; quick: minutes on CPU, plumbing only.
PRESETS = ("cpu", "gpu", "quick")
DEFAULT_SEEDS = {"cpu": (0, 1, 2), "gpu": (0, 1, 2), "quick": (0,)}

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The flags every quality benchmark has; called by the scripts' `__main__` only, so
  importing them (tests) defines no flags."""
  flags.DEFINE_string("workdir", None, "Where the runs, their TensorBoard events and "
                      f"{RESULTS_FILE} go; default a new temporary folder. Re-using a "
                      "workdir resumes (finished runs are only re-evaluated).")
  flags.DEFINE_enum("preset", None, PRESETS, "Sizes: cpu (the whole table on two CPU cores "
                    "within an hour), gpu (one GPU), quick (minutes on CPU: checks the "
                    "plumbing, not the claim). Default: cpu on a CPU backend, else gpu.")
  flags.DEFINE_bool("quick", False, "Alias of --preset=quick.")
  flags.DEFINE_list("seeds", None, "Seeds (config.seed) to run each configuration with; "
                    "the table gives mean ± std over them. Default: 0,1,2 (--preset=quick: 0).")


def preset_from_flags() -> str:
  """--preset, or --quick, or the backend's default; warns when GPU sizes meet a CPU."""
  if FLAGS.quick and FLAGS.preset not in (None, "quick"):
    raise app.UsageError(f"--quick contradicts --preset={FLAGS.preset}")
  on_cpu = jax.default_backend() == "cpu"
  preset = "quick" if FLAGS.quick else FLAGS.preset or ("cpu" if on_cpu else "gpu")
  if preset == "gpu" and on_cpu:
    logging.warning("--preset=gpu is meant for a GPU; on CPU this takes hours.")
  return preset


def seeds_from_flags(preset: str) -> tuple[int, ...]:
  seeds = tuple(int(s) for s in FLAGS.seeds) if FLAGS.seeds else DEFAULT_SEEDS[preset]
  if len(set(seeds)) != len(seeds):
    raise app.UsageError(f"--seeds repeats a seed: {seeds}")
  return seeds


def workdir_from_flags(name: str) -> str:
  return FLAGS.workdir or tempfile.mkdtemp(prefix=f"quality_{name}_")


def seed_dir(workdir: str, seed: int) -> str:
  """Where one seed's runs go, so seeds resume independently."""
  return os.path.join(workdir, f"seed{seed}")


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


def mean_std(values: Sequence[float]) -> dict[str, Any]:
  """{"mean", "std", "n"} of one metric over seeds; std is the sample standard
  deviation (ddof = 1), None for a single seed, which has no spread to show."""
  values = np.asarray(values, np.float64)
  std = float(np.std(values, ddof=1)) if len(values) > 1 else None
  return {"mean": float(np.mean(values)), "std": std, "n": len(values)}


def aggregate(runs: Sequence[Mapping[str, Any]], group_keys: Sequence[str],
              metrics: Sequence[str]) -> list[dict[str, Any]]:
  """Per group of runs sharing `group_keys` (in first-seen order; the seeds of one
  configuration), the group keys and the `mean_std` of each metric."""
  groups = {}
  for run in runs:
    groups.setdefault(tuple(run[k] for k in group_keys), []).append(run)
  return [{**dict(zip(group_keys, key)),
           **{metric: mean_std([run[metric] for run in members]) for metric in metrics}}
          for key, members in groups.items()]


def paired_difference(runs: Sequence[Mapping[str, Any]], key: str, treated, baseline,
                      metric: str, match: Sequence[str] = ("seed",)) -> dict[str, Any] | None:
  """`metric` of the runs with run[key] == treated minus that of the baseline run with
  the same `match` values (the seed: same judges, same data order), as `mean_std` of
  the differences plus "positive", how many were above 0. Pairing removes what the
  seeds share, so a small effect that every seed shows is not lost in the spread of
  the seeds' levels. None where no run pairs."""
  base = {tuple(r[m] for m in match): r[metric] for r in runs if r[key] == baseline}
  diffs = [r[metric] - base[k] for r in runs if r[key] == treated
           and (k := tuple(r[m] for m in match)) in base]
  if not diffs:
    return None
  return {**mean_std(diffs), "positive": int(np.sum(np.asarray(diffs) > 0))}


def format_paired(difference: Mapping[str, Any]) -> str:
  """A `paired_difference` as "+0.017 ± 0.006 (3/3 seeds > 0)"."""
  spread = "" if difference["std"] is None else f" ± {difference['std']:.3f}"
  return (f"{difference['mean']:+.3f}{spread} "
          f"({difference['positive']}/{difference['n']} seeds > 0)")


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  """A plain-text table; floats get 3 decimals, `mean_std` dicts print as
  "mean ± std" (the mean alone for one seed), None as "-"."""

  def cell(value) -> str:
    if value is None:
      return "-"
    if isinstance(value, Mapping):
      spread = "" if value["std"] is None else f" ± {value['std']:.3f}"
      return f"{value['mean']:.3f}{spread}"
    return f"{value:.3f}" if isinstance(value, float) else str(value)

  cells = [list(headers)] + [[cell(v) for v in row] for row in rows]
  widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
  lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
  lines.insert(1, "  ".join("-" * w for w in widths))
  return "\n".join(lines)


def report(workdir: str, results: dict, preset: str, format_results) -> None:
  """Writes results.json and prints the benchmark's table: each script's last step."""
  results["preset"] = preset
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


def every_record(domain: ml_collections.ConfigDict, seed: int) -> dict[str, np.ndarray]:
  """Every record of `domain` once ({"image", "label"}), with evaluation preprocessing,
  in an order fixed by `seed`."""
  return pipeline.fixed_batch(domain, len(domains.domain_source(domain)), seed=seed)


def source_like_domain(base: ml_collections.ConfigDict, split: str, painted: bool):
  """Digits of `split` with A's preprocessing; painted as B is when `painted` (what a
  perfect translation of them would look like)."""
  domain = copy.deepcopy(base.data.source)
  domain.split = split
  domain.num_workers = 0  # evaluation-sized reads
  if painted:
    domain.colorize_foreground = base.data.target.colorize_foreground
    domain.colorize_background = base.data.target.colorize_background
  return domain

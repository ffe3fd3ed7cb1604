"""Evaluation pieces both methods share: feature spaces, FID/KID, classifiers, outputs.

Translations are scored against real images of their target domain in up to two
feature spaces: "inception" (pool features of the standard FID Inception-v3, when the
user supplies pytorch-fid's weights file) and "domain" (the 128-d penultimate layer of
a small `classifier.DomainClassifier` the run trains on its own data, so that scores
exist offline and at any image size). Domain scores compare runs that share the
classifier file (one workdir); only Inception scores compare with published numbers.

`jdbw_jax.evaluate` / `balagan_jax.evaluate` restore a checkpoint and write
`metrics.json` plus the figure grids with `write_results`; their training loops call
the same evaluators periodically.
"""

import functools
import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import app, flags, logging
from etils import epath

from i2i_jax import files, images
from i2i_jax.errors import ConfigError
from i2i_jax.evaluation import classifier, metrics
from i2i_jax.evaluation.inception import inception_feature_extractor
from i2i_jax.training import runtime

FLAGS = flags.FLAGS
METRICS_FILE = "metrics.json"


@functools.lru_cache(maxsize=2)
def inception_extractor(path: str) -> metrics.FeatureExtractor:
  """The Inception feature extractor of a weights file, loaded (and compiled) once
  per process: benchmarks evaluate many checkpoints in a row."""
  return inception_feature_extractor(path)


def feature_spaces(domain: metrics.FeatureExtractor | None,
                   inception_weights: str) -> dict[str, metrics.FeatureExtractor]:
  """The feature spaces to score in: "domain" if given, "inception" if weights are."""
  spaces = {}
  if domain is not None:
    spaces["domain"] = domain
  if inception_weights:
    spaces["inception"] = inception_extractor(inception_weights)
  return spaces


class RealFeatures:
  """Features of fixed real images of one domain, computed once per feature space;
  translations into that domain are scored against them (FID and KID)."""

  def __init__(self, real_images: np.ndarray, spaces: Mapping[str, metrics.FeatureExtractor],
               *, kid_subset_size: int, batch_size: int):
    self.spaces = dict(spaces)
    self.batch_size = batch_size
    self.kid_subset_size = kid_subset_size
    self.features = {name: self.extract(name, real_images) for name in self.spaces}

  def extract(self, space: str, images_: np.ndarray) -> np.ndarray:
    return metrics.extract_features(self.spaces[space], images_, batch_size=self.batch_size)

  def score(self, fake_images: np.ndarray, direction: str) -> dict[str, float]:
    """fid_/kid_<direction>_<space> for every feature space, and kid_std_ where the
    KID subsets differ."""
    out = {}
    for name, real in self.features.items():
      fake = self.extract(name, fake_images)
      out[f"fid_{direction}_{name}"] = metrics.fid(real, fake)
      # A subset holds min(subset size, both counts) samples of each set. When that is
      # every sample of both, all subsets are the same two sets and their spread is
      # float round-off: one subset suffices, and kid_std is left out, not reported as 0.
      size = min(self.kid_subset_size, len(real), len(fake))
      if size < max(len(real), len(fake)):
        out[f"kid_{direction}_{name}"], out[f"kid_std_{direction}_{name}"] = metrics.kid(
            real, fake, subset_size=size)
      else:
        out[f"kid_{direction}_{name}"], _ = metrics.kid(real, fake, num_subsets=1,
                                                        subset_size=size)
    return out

  def diversity(self, grouped_images: np.ndarray, direction: str) -> dict[str, float]:
    """diversity_<direction>_<space>: grouped_images is (S sources, R references, H, W, C);
    the mean pairwise feature distance among each source's R outputs, averaged."""
    s, r = grouped_images.shape[:2]
    flat = grouped_images.reshape((s * r,) + grouped_images.shape[2:])
    return {f"diversity_{direction}_{name}":
            metrics.diversity(self.extract(name, flat).reshape(s, r, -1))
            for name in self.spaces}


def in_batches(fn: Callable[..., Any], arrays: Sequence, batch_size: int) -> tuple[np.ndarray, ...]:
  """`fn` over consecutive slices of equally long `arrays`, each output concatenated
  on the host: thousands of 128x128 translations would not fit one device call.

  A short last slice is padded (by repeating its rows) so a jitted `fn` compiles once.
  """
  n = len(arrays[0])
  batch = min(batch_size, n)
  parts = []
  for start in range(0, n, batch):
    take = np.arange(start, start + batch).clip(max=n - 1)
    out = fn(*(np.asarray(a)[take] for a in arrays))
    out = jax.device_get(out if isinstance(out, tuple) else (out,))
    parts.append([o[:min(batch, n - start)] for o in out])
  return tuple(np.concatenate(column) for column in zip(*parts))


def cached_classifier(path: str, make_batches: Callable[[], Any], num_classes: int,
                      image_shape, *, steps: int, seed: int):
  """A DomainClassifier's params: read from `path`, else trained on `make_batches()`
  and saved there (process 0), so resumed runs and later evaluations share one judge
  and one domain feature space."""
  if epath.Path(path).exists():
    return classifier.load_params(path, num_classes, image_shape)
  logging.info("Training the evaluation classifier %s (%d classes, %d steps).", path,
               num_classes, steps)
  params = classifier.train_classifier(make_batches(), num_classes, image_shape, steps=steps,
                                       seed=seed, log_fn=logging.info)
  if jax.process_index() == 0:
    classifier.save_params(path, params)
  return params


def fill_missing(config: ml_collections.ConfigDict,
                 defaults: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Adds the fields of `defaults` that `config` lacks (recursively), in place: runs
  saved before a field existed (e.g. new `eval` settings) still evaluate."""
  for key, value in defaults.items():
    if key not in config:
      config[key] = value
    elif isinstance(value, ml_collections.ConfigDict) and isinstance(
        config[key], ml_collections.ConfigDict):
      fill_missing(config[key], value)
  return config


def run_settings(config: ml_collections.ConfigDict, defaults: ml_collections.ConfigDict,
                 inception_weights: str | None, num_eval: int | None, *, workdir: str,
                 can_evaluate: Callable[[ml_collections.ConfigDict, str], bool],
                 missing_judges: str) -> tuple[ml_collections.ConfigDict, str, int]:
  """(config, Inception weights, sample count) of an evaluation of the run in `workdir`:
  its config completed with `defaults` (`fill_missing`), and the flags' weights and
  count where given, else the run's.

  Raises:
    ConfigError: `can_evaluate(config, weights)` finds nothing to score with; the
      message says why (`missing_judges`: what the run's own judges lack).
  """
  config = fill_missing(config, defaults)
  weights = config.eval.inception_weights if inception_weights is None else inception_weights
  if not can_evaluate(config, weights):
    raise ConfigError(f"nothing to score the run in {workdir} with: {missing_judges}, and no "
                      "Inception weights were given (--inception_weights)")
  return config, weights, num_eval or config.num_eval


def record_run(method: str, workdir: str, step: int, output: str | None, *, num_eval: int,
               features: Mapping[str, Any], metrics: Mapping[str, float],
               grids: Mapping[str, np.ndarray]) -> dict:
  """Writes an evaluation (default dir WORKDIR/eval/step_NNNNNNN) and returns what
  metrics.json holds; both methods' `evaluate_run` end here."""
  directory = output or os.fspath(epath.Path(workdir) / "eval" / f"step_{step:07d}")
  results = {"method": method, "workdir": workdir, "step": step, "num_eval": num_eval,
             "features": dict(features), "metrics": dict(metrics), "output_dir": directory}
  write_results(directory, results, grids)
  return results


def write_results(directory: str, results: Mapping[str, Any],
                  grids: Mapping[str, np.ndarray]) -> None:
  """`directory/metrics.json` and one `<name>.png` per grid (process 0 only)."""
  if jax.process_index() != 0:
    return
  for name, grid in grids.items():
    images.save_png(epath.Path(directory) / f"{name}.png", grid)
  path = files.write_atomic(epath.Path(directory) / METRICS_FILE,
                            json.dumps(results, indent=2, sort_keys=True) + "\n")
  logging.info("Wrote %s", path)


def define_flags():
  """The evaluation CLIs' flags, defined on demand: they share names with translate's."""
  flags.DEFINE_string("workdir", None, "Training workdir (holds config.json and checkpoints/).")
  flags.DEFINE_integer("step", 0, "Checkpoint step to evaluate (0 = latest).")
  flags.DEFINE_string("inception_weights", None,
                      "pytorch-fid Inception weights (pt_inception-2015-12-05-6726825d.pth or "
                      ".npz) for Inception FID/KID; default: the run's "
                      "config.eval.inception_weights; '' = domain features only.")
  flags.DEFINE_string("output", None, "Folder for metrics.json and the grids; default "
                      "WORKDIR/eval/step_NNNNNNN.")
  flags.DEFINE_integer("num_eval", 0, "Samples to score (0 = the run's config.num_eval).")
  flags.mark_flags_as_required(["workdir"])


def cli_main(evaluate_run: Callable[..., dict]) -> Callable[[list[str]], None]:
  """An absl main that runs `evaluate_run` with the flags and prints its JSON."""

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    runtime.initialize()
    results = evaluate_run(FLAGS.workdir, step=FLAGS.step or None,
                           inception_weights=FLAGS.inception_weights,
                           output_dir=FLAGS.output, num_eval=FLAGS.num_eval or None)
    print(json.dumps(results, indent=2, sort_keys=True))

  return main

"""Scores JD-BW translations: the evaluator training runs, and the CLI on a checkpoint.

  python -m jdbw_jax.evaluate --workdir=/tmp/jdbw_demo [--step=300] \
      [--inception_weights=pt_inception-2015-12-05-6726825d.pth] [--output=DIR] [--num_eval=N]

Writes DIR (default WORKDIR/eval/step_NNNNNNN)/metrics.json and the sample grids of
training (source / transferred / transferred-back rows; fixed-noise grids), and prints
the JSON. Metrics, per direction on `num_eval` fixed samples of each domain:
class_match_{x_to_y,y_to_x} (labelled data), fid_/kid_/kid_std_<direction>_domain in
the other domain's classifier features, and _inception with Inception weights.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from etils import epath

from i2i_jax import images
from i2i_jax.data import pipeline
from i2i_jax.evaluation import classifier, evaluators
from i2i_jax.evaluation import metrics as metrics_lib
from i2i_jax.training import cli
from jdbw_jax import default_config, translate
from jdbw_jax.method import JDBW, TrainState


def fixed_inputs(config, num: int, seed: int):
  """Deterministic source/target samples (numpy) for grids and evaluation."""
  return (pipeline.fixed_batch(config.data.source, num, seed=seed),
          pipeline.fixed_batch(config.data.target, num, seed=seed))


def make_translate_fn(model: JDBW):
  """Jitted (state, x, y, zx, zy) -> (Gxy x, Gyx Gxy x, Gyx y, Gxy Gyx y)."""

  @jax.jit
  def translate_both(state: TrainState, x, y, zx, zy):
    p, s = state.g.params, state.g.batch_stats
    gx, gy, _ = model.translate(p, s, x, y, zx, zy)
    # Round trip with the same noise: the paper's third rows ("transferred back").
    back_y, back_x, _ = model.translate(p, s, gy, gx, zx, zy)
    return gx, back_x, gy, back_y

  return translate_both


def sample_grids(model: JDBW, translate_fn, state, x, y, noise_rng, num_noise: int = 8):
  """The paper's figures: source / transferred / transferred-back rows for each
  direction (Figs. 2, 5, 6), and fixed-noise grids (Figs. 4, 7, 8): row = source,
  column = one noise vector shared down the column."""
  n = x.shape[0]
  k1, k2 = jax.random.split(noise_rng)
  zx, zy = model.sample_noise(k1, n), model.sample_noise(k2, n)
  gx, back_x, gy, back_y = jax.device_get(translate_fn(state, x, y, zx, zy))
  grids = {"x_to_y": images.make_grid([x, gx, back_x]),
           "y_to_x": images.make_grid([y, gy, back_y])}
  rows = min(n, 8)
  z = model.sample_noise(jax.random.key(0), num_noise)  # the same noise at every call
  src_x = np.repeat(x[:rows], num_noise, axis=0)
  src_y = np.repeat(y[:rows], num_noise, axis=0)
  z_tiled = jnp.tile(z, (rows, 1))
  gx_fixed, _, gy_fixed, _ = jax.device_get(translate_fn(state, src_x, src_y, z_tiled, z_tiled))
  grids["x_to_y_fixed_noise"] = images.make_grid(
      [np.concatenate([x[r:r + 1], gx_fixed[r * num_noise:(r + 1) * num_noise]])
       for r in range(rows)])
  grids["y_to_x_fixed_noise"] = images.make_grid(
      [np.concatenate([y[r:r + 1], gy_fixed[r * num_noise:(r + 1) * num_noise]])
       for r in range(rows)])
  return grids


def classifier_batches(config, domain):
  """Labelled training batches of one domain for its evaluation classifier."""
  return iter(pipeline.make_domain_dataset(
      domain, batch_size=config.eval.classifier_batch, seed=config.seed + 7, shard_index=0,
      shard_count=1))


def can_evaluate(config, inception_weights: str) -> bool:
  """Evaluation needs a judge: labelled domains with classifiers, or Inception weights."""
  return bool(config.data.num_classes and config.eval.classifier_steps) or bool(inception_weights)


class Evaluator:
  """Both directions on fixed samples: class-matching rates, judged by classifiers of
  the other domain, and FID/KID of the translations against real images of their
  target domain, in those classifiers' features ("domain") and Inception's.

  The classifiers are trained once per workdir on each domain's labels and cached as
  classifier_{x,y}.msgpack, so resumed runs and `evaluate_run` reuse them.
  Unlabelled data (config.data.num_classes = 0) has none: then only Inception
  features, given their weights, score.
  """

  def __init__(self, config, workdir, model: JDBW, *, inception_weights: str, num_eval: int):
    self.config = config
    self.model = model
    self.translate = make_translate_fn(model)
    self.num_classes = config.data.num_classes
    self.params = {}
    if self.num_classes and config.eval.classifier_steps:
      for name, domain, shape in (("x", config.data.source, model.x_shape),
                                  ("y", config.data.target, model.y_shape)):
        self.params[name] = evaluators.cached_classifier(
            epath.Path(workdir) / f"classifier_{name}.msgpack",
            functools.partial(classifier_batches, config, domain), self.num_classes, shape,
            steps=config.eval.classifier_steps, seed=config.seed)
    self.x, self.y = fixed_inputs(config, num_eval, seed=config.seed + 11)
    self.inception_weights = inception_weights
    # Translations into Y are scored against real Y in the Y classifier's features.
    self.real = {"x_to_y": self._real_features(self.y["image"], "y"),
                 "y_to_x": self._real_features(self.x["image"], "x")}

  def _real_features(self, real_images, domain_name):
    domain = (metrics_lib.domain_feature_extractor(self.params[domain_name], self.num_classes)
              if domain_name in self.params else None)
    return evaluators.RealFeatures(
        real_images, evaluators.feature_spaces(domain, self.inception_weights),
        kid_subset_size=self.config.eval.kid_subset_size,
        batch_size=self.config.eval.batch_size)

  def describe(self) -> dict[str, str]:
    """Which features the FID/KID keys' `_domain` / `_inception` suffixes refer to."""
    if self.params:
      domain = ("128-d features of classifier_y.msgpack (x_to_y) and classifier_x.msgpack "
                "(y_to_x)")
    elif not self.num_classes:
      domain = "unavailable: unlabelled data (config.data.num_classes = 0)"
    else:
      domain = "off: config.eval.classifier_steps = 0"
    return {"domain": domain, "inception": self.inception_weights or "off: no weights given"}

  def __call__(self, state) -> dict[str, float]:
    n = self.x["image"].shape[0]
    k1, k2 = jax.random.split(jax.random.key(self.config.seed + 13))
    gx, _, gy, _ = evaluators.in_batches(
        functools.partial(self.translate, state),
        (self.x["image"], self.y["image"], self.model.sample_noise(k1, n),
         self.model.sample_noise(k2, n)),
        self.config.eval.batch_size)
    out = {}
    if self.params:
      predict = lambda name, images_: classifier.predict(self.params[name], images_,
                                                         self.num_classes)
      out.update({
          "class_match_x_to_y": metrics_lib.class_matching_rate(predict("y", gx), self.x["label"]),
          "class_match_y_to_x": metrics_lib.class_matching_rate(predict("x", gy), self.y["label"]),
          # Sanity of the judges themselves, on real images of their own domain.
          "classifier_acc_y": classifier.accuracy(predict("y", self.y["image"]),
                                                  self.y["label"]),
          "classifier_acc_x": classifier.accuracy(predict("x", self.x["image"]),
                                                  self.x["label"]),
      })
    out.update(self.real["x_to_y"].score(gx, "x_to_y"))
    out.update(self.real["y_to_x"].score(gy, "y_to_x"))
    return out


def evaluate_run(workdir: str, *, step: int | None = None, inception_weights: str | None = None,
                 output_dir: str | None = None, num_eval: int | None = None) -> dict:
  """Evaluates the run in `workdir` at checkpoint `step` (default: the latest).

  Args:
    workdir: a JD-BW training workdir (config.json, checkpoints/, classifiers).
    step: checkpoint step; None = the latest.
    inception_weights: pytorch-fid weights file for Inception FID/KID; None = the
      run's config.eval.inception_weights, "" = domain features only.
    output_dir: where metrics.json and the grids go; None = workdir/eval/step_NNNNNNN.
    num_eval: samples per direction; None = the run's config.num_eval.

  Returns:
    What metrics.json holds: {"method", "workdir", "step", "num_eval", "features"
    (what the _domain / _inception suffixes mean), "metrics" (name -> float),
    "output_dir"}.
  """
  model, state = translate.load_model(workdir, step or 0)
  config, weights, num_eval = evaluators.run_settings(
      model.config, default_config.get_config(), inception_weights, num_eval,
      workdir=workdir, can_evaluate=can_evaluate,
      missing_judges="its data is unlabelled (config.data.num_classes = 0) or "
                     "config.eval.classifier_steps = 0")
  evaluator = Evaluator(config, workdir, model, inception_weights=weights, num_eval=num_eval)
  step = int(state.step)
  scores = evaluator(state)
  sample_x, sample_y = fixed_inputs(config, config.num_samples, seed=config.seed)
  grids = sample_grids(model, evaluator.translate, state, sample_x["image"], sample_y["image"],
                       jax.random.key(config.seed + step))
  return evaluators.record_run("jdbw", workdir, step, output_dir, num_eval=num_eval,
                               features=evaluator.describe(), metrics=scores, grids=grids)


main = evaluators.cli_main(evaluate_run)

if __name__ == "__main__":
  evaluators.define_flags()
  cli.run(main)

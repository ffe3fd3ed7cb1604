"""Scores a JD-BW checkpoint: metrics.json and the figure grids.

  python -m jdbw_jax.evaluate --workdir=/tmp/jdbw_demo [--step=300] \
      [--inception_weights=pt_inception-2015-12-05-6726825d.pth] [--output=DIR] [--num_eval=N]

Writes DIR (default WORKDIR/eval/step_NNNNNNN)/metrics.json and the sample grids of
training (source / transferred / transferred-back rows; fixed-noise grids), and prints
the JSON. Metrics, per direction on `num_eval` fixed samples of each domain:
class_match_{x_to_y,y_to_x} (labelled data), fid_/kid_/kid_std_<direction>_domain in
the other domain's classifier features, and _inception with Inception weights.
"""

import jax

from i2i_jax.errors import ConfigError
from i2i_jax.evaluation import evaluators
from i2i_jax.training import cli
from jdbw_jax import default_config, train, translate


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
  config = evaluators.fill_missing(model.config, default_config.get_config())
  step = int(state.step)
  weights = config.eval.inception_weights if inception_weights is None else inception_weights
  num_eval = num_eval or config.num_eval
  if not train.can_evaluate(config, weights):
    raise ConfigError(f"nothing to score the run in {workdir} with: its data is unlabelled "
                      "(config.data.num_classes = 0) or config.eval.classifier_steps = 0, and "
                      "no Inception weights were given (--inception_weights)")
  translate_fn = train.make_translate_fn(model)
  evaluator = train.Evaluator(config, workdir, model.x_shape, model.y_shape,
                              inception_weights=weights, num_eval=num_eval)
  scores = evaluator(model, translate_fn, state)
  sample_x, sample_y = train.fixed_inputs(config, config.num_samples, seed=config.seed)
  grids = train.sample_grids(model, translate_fn, state, sample_x["image"], sample_y["image"],
                             jax.random.key(config.seed + step))
  return evaluators.record_run("jdbw", workdir, step, output_dir, num_eval=num_eval,
                               features=evaluator.describe(), metrics=scores, grids=grids)


main = evaluators.cli_main(evaluate_run)

if __name__ == "__main__":
  evaluators.define_flags()
  cli.run(main)

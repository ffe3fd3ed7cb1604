"""Scores a BalaGAN checkpoint: metrics.json and the figure grids.

  python -m balagan_jax.evaluate --workdir=/tmp/balagan_demo [--step=300] \
      [--inception_weights=pt_inception-2015-12-05-6726825d.pth] [--output=DIR] [--num_eval=N]

Writes DIR (default WORKDIR/eval/step_NNNNNNN)/metrics.json, translation.png (rows:
sources, references, outputs) and reference_grid.png (first row the references, first
column the sources, each cell G(source, reference)), and prints the JSON. Metrics of
A -> B with the EMA generator: fid_/kid_/kid_std_a_to_b_<features> against real B,
diversity_a_to_b_<features> (mean pairwise distance among one source's translations
with different references), and class_match_a_to_b where both domains share labels.
"""

import os

from balagan_jax import default_config, train, translate
from balagan_jax import modalities as modalities_lib
from i2i_jax.errors import ConfigError
from i2i_jax.evaluation import evaluators
from i2i_jax.training import cli


def evaluate_run(workdir: str, *, step: int | None = None, inception_weights: str | None = None,
                 output_dir: str | None = None, num_eval: int | None = None) -> dict:
  """Evaluates the run in `workdir` at checkpoint `step` (default: the latest).

  Args:
    workdir: a BalaGAN training workdir (config.json, modalities/, checkpoints/).
    step: checkpoint step; None = the latest.
    inception_weights: pytorch-fid weights file for Inception FID/KID/diversity; None =
      the run's config.eval.inception_weights, "" = domain features only.
    output_dir: where metrics.json and the grids go; None = workdir/eval/step_NNNNNNN.
    num_eval: translations scored; None = the run's config.num_eval.

  Returns:
    What metrics.json holds: {"method", "workdir", "step", "num_eval", "features"
    (what the _domain / _inception suffixes, class_match and diversity refer to),
    "metrics" (name -> float), "output_dir"}.
  """
  model, state = translate.load_model(workdir, step or 0)
  config = evaluators.fill_missing(model.config, default_config.get_config())
  step = int(state.step)
  weights = config.eval.inception_weights if inception_weights is None else inception_weights
  num_eval = num_eval or config.num_eval
  if not train.can_evaluate(config, weights):
    raise ConfigError(f"nothing to score the run in {workdir} with: config.eval."
                      "classifier_steps = 0 and no Inception weights were given "
                      "(--inception_weights)")
  mods = modalities_lib.Modalities.load(
      os.path.join(workdir, "modalities", modalities_lib.ASSIGNMENT_FILE))
  evaluator = train.Evaluator(config, workdir, mods, model.image_shape,
                              inception_weights=weights, num_eval=num_eval)
  sample = train.make_sampler(model)
  scores = evaluator(sample, state)
  sources, references = train.sample_inputs(config, config.num_samples)
  grids = {"translation": train.translation_grid(sample, state, sources, references),
           "reference_grid": translate.reference_grid(model, state, sources, references)}
  return evaluators.record_run("balagan", workdir, step, output_dir, num_eval=num_eval,
                               features=evaluator.describe(), metrics=scores, grids=grids)


main = evaluators.cli_main(evaluate_run)

if __name__ == "__main__":
  evaluators.define_flags()
  cli.run(main)

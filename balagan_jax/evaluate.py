"""Scores BalaGAN translations: the evaluator training runs, and the CLI on a checkpoint.

  python -m balagan_jax.evaluate --workdir=/tmp/balagan_demo [--step=300] \
      [--inception_weights=pt_inception-2015-12-05-6726825d.pth] [--output=DIR] [--num_eval=N]

Writes DIR (default WORKDIR/eval/step_NNNNNNN)/metrics.json, translation.png (rows:
sources, references, outputs) and reference_grid.png (first row the references, first
column the sources, each cell G(source, reference)), and prints the JSON. Metrics of
A -> B with the EMA generator: fid_/kid_/kid_std_a_to_b_<features> against real B,
diversity_a_to_b_<features> (mean pairwise distance among one source's translations
with different references), and class_match_a_to_b where both domains share labels.
"""

import functools

import jax
import ml_collections
import numpy as np
from etils import epath

from balagan_jax import default_config, translate
from balagan_jax import modalities as modalities_lib
from balagan_jax.method import BalaGAN, TrainState
from i2i_jax import images
from i2i_jax.data import domains, pipeline, sources
from i2i_jax.evaluation import classifier, evaluators
from i2i_jax.evaluation import metrics as metrics_lib
from i2i_jax.training import cli


# The class-matching judge, trained once per workdir (see Evaluator).
JUDGE_FILE = "eval_target_classifier.msgpack"


def sample_inputs(config, num: int):
  """Fixed sources from A and references from B for the (source, reference, output) grid."""
  return (pipeline.fixed_batch(config.data.source, num, seed=config.seed)["image"],
          pipeline.fixed_batch(config.data.target, num, seed=config.seed)["image"])


def evaluation_sources(config, num_eval: int, domain=None) -> dict:
  """The scored translations' fixed sources of A ({"image", "label"}). `domain`, A's
  records with other preprocessing (A painted as B), draws the same records."""
  return pipeline.fixed_batch(domain or config.data.source, num_eval, seed=config.seed + 11)


def evaluation_pairs(config, num_eval: int) -> tuple[dict, dict]:
  """The scored translations' fixed sources of A and references of B ({"image",
  "label"} each): the same for every evaluation of a run."""
  return (evaluation_sources(config, num_eval),
          pipeline.fixed_batch(config.data.target, num_eval, seed=config.seed + 12))


def make_sampler(model: BalaGAN):
  """Jitted (state, x, y) -> G(x, y) of the EMA generator."""

  @jax.jit
  def sample(state: TrainState, x, y):
    return model.translate(state.g_ema, x, y)

  return sample


def translation_grid(sample, state, sources_a, references_b) -> np.ndarray:
  """Rows: sources, references, outputs G(source, reference) of the EMA generator."""
  return images.make_grid([sources_a, references_b,
                           np.asarray(sample(state, sources_a, references_b))])


def can_evaluate(config, inception_weights: str) -> bool:
  """Evaluation needs features: the run's own classifier or Inception weights."""
  return bool(config.eval.classifier_steps) or bool(inception_weights)


def modality_batches(config, mods: modalities_lib.Modalities):
  """Both domains labelled by modality, drawn uniformly: the evaluation classifier's
  data. B is included even when training is not transductive, since the classifier's
  features must describe B's images."""
  union = sources.RelabelledUnion([
      (domains.domain_source(config.data.source), mods.source_labels),
      (domains.domain_source(config.data.target), mods.target_labels)])
  return iter(pipeline.make_domain_dataset(
      modalities_lib.training_domain(config, mods.num_modalities),
      batch_size=config.eval.classifier_batch, seed=config.seed + 7, source=union,
      shard_index=0, shard_count=1))


def judge_domain(config) -> ml_collections.ConfigDict:
  """B's labelled images that the class-matching judge learns from: B itself, or
  `eval.judge_max_records` of the labelled set that B is capped from."""
  if config.eval.judge_max_records < 0:
    return config.data.target
  return ml_collections.ConfigDict({**config.data.target.to_dict(),
                                    "max_records": config.eval.judge_max_records})


def _judge_data(config) -> str:
  records = config.eval.judge_max_records
  if records < 0:
    return "B's images"
  return f"{records or 'all'} images of the labelled set B is capped from"


def target_label_batches(config):
  """The class-matching judge's training data (`judge_domain`)."""
  return iter(pipeline.make_domain_dataset(
      judge_domain(config), batch_size=config.eval.classifier_batch, seed=config.seed + 8,
      shard_index=0, shard_count=1))


def shared_label_classes(config) -> int:
  """Label classes for class matching A -> B, or 0 where it means nothing.

  It needs labels in both domains, and B must carry every class of A, since the judge
  is trained on B: digits -> styled digits qualify; CelebA women -> men, whose labels
  are the domains themselves, and unlabelled folders do not.
  """
  labels = [sources.source_labels(domains.build_source(domain))
            for domain in (config.data.source, config.data.target)]
  if any(domain_labels is None for domain_labels in labels):
    return 0
  source_classes, target_classes = (set(np.unique(domain_labels[domain_labels >= 0]).tolist())
                                    for domain_labels in labels)
  return max(target_classes) + 1 if source_classes <= target_classes else 0


class Evaluator:
  """A -> B translations (sources of A in the style of references of B, EMA generator)
  on fixed samples, scored against real B images: FID/KID in the features of a
  modality classifier ("domain") and Inception's, diversity over references, and
  class matching where both domains carry the same labels.

  The modality classifier (all k_source + k_target modalities of both domains, so it
  works for unlabelled data) is trained once per workdir and cached as
  eval_classifier.msgpack; the class-matching judge, trained on B's labels, as
  eval_target_classifier.msgpack.
  """

  def __init__(self, config, workdir, mods: modalities_lib.Modalities, model: BalaGAN, *,
               inception_weights: str, num_eval: int):
    self.config = config
    ev = config.eval
    self.sample = make_sampler(model)
    self.num_modalities = mods.num_modalities
    self.inception_weights = inception_weights
    self.sources, references = evaluation_pairs(config, num_eval)
    self.references = references["image"]
    self.real = pipeline.fixed_batch(config.data.target, num_eval, seed=config.seed + 13)
    domain = None
    if ev.classifier_steps:
      params = evaluators.cached_classifier(
          epath.Path(workdir) / "eval_classifier.msgpack",
          functools.partial(modality_batches, config, mods), mods.num_modalities,
          model.image_shape, steps=ev.classifier_steps, seed=config.seed)
      domain = metrics_lib.domain_feature_extractor(params, mods.num_modalities)
    self.real_features = evaluators.RealFeatures(
        self.real["image"], evaluators.feature_spaces(domain, inception_weights),
        kid_subset_size=ev.kid_subset_size, batch_size=ev.batch_size)
    self.num_labels = shared_label_classes(config) if ev.classifier_steps else 0
    if self.num_labels:
      self.judge = evaluators.cached_classifier(
          epath.Path(workdir) / JUDGE_FILE,
          functools.partial(target_label_batches, config), self.num_labels, model.image_shape,
          steps=ev.classifier_steps, seed=config.seed)
    self.num_diversity_sources = min(ev.diversity_sources, num_eval)
    self.num_diversity_references = min(ev.diversity_references, num_eval)

  def describe(self) -> dict[str, str]:
    """What the metrics' `_domain` / `_inception` suffixes and class_match refer to."""
    return {
        "domain": (f"128-d features of eval_classifier.msgpack ({self.num_modalities} "
                   "modalities of both domains)" if "domain" in self.real_features.spaces
                   else "off: config.eval.classifier_steps = 0"),
        "inception": self.inception_weights or "off: no weights given",
        "class_match": (f"{JUDGE_FILE} ({self.num_labels} classes of B's "
                        f"labels, learnt from {_judge_data(self.config)})" if self.num_labels
                        else "unavailable: the domains do not share labels"),
        "diversity": (f"{self.num_diversity_sources} sources x "
                      f"{self.num_diversity_references} references"),
    }

  def __call__(self, state) -> dict[str, float]:
    translate_fn = functools.partial(self.sample, state)
    batch = self.config.eval.batch_size
    out, = evaluators.in_batches(translate_fn, (self.sources["image"], self.references), batch)
    scores = self.real_features.score(out, "a_to_b")
    s, r = self.num_diversity_sources, self.num_diversity_references
    grouped, = evaluators.in_batches(
        translate_fn, (np.repeat(self.sources["image"][:s], r, 0),
                       np.tile(self.references[:r], (s, 1, 1, 1))), batch)
    scores.update(self.real_features.diversity(grouped.reshape((s, r) + grouped.shape[1:]),
                                               "a_to_b"))
    if self.num_labels:
      predict = lambda images_: classifier.predict(self.judge, images_, self.num_labels)
      scores["class_match_a_to_b"] = metrics_lib.class_matching_rate(predict(out),
                                                                     self.sources["label"])
      # Sanity of the judge itself, on real images of B.
      scores["classifier_acc_b"] = classifier.accuracy(predict(self.real["image"]),
                                                       self.real["label"])
    return scores


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
  config, weights, num_eval = evaluators.run_settings(
      model.config, default_config.get_config(), inception_weights, num_eval,
      workdir=workdir, can_evaluate=can_evaluate,
      missing_judges="config.eval.classifier_steps = 0")
  mods = modalities_lib.Modalities.load(modalities_lib.assignment_path(workdir))
  evaluator = Evaluator(config, workdir, mods, model, inception_weights=weights,
                        num_eval=num_eval)
  scores = evaluator(state)
  sources_a, references_b = sample_inputs(config, config.num_samples)
  grids = {"translation": translation_grid(evaluator.sample, state, sources_a, references_b),
           "reference_grid": translate.reference_grid(model, state, sources_a, references_b)}
  return evaluators.record_run("balagan", workdir, int(state.step), output_dir,
                               num_eval=num_eval, features=evaluator.describe(), metrics=scores,
                               grids=grids)


main = evaluators.cli_main(evaluate_run)

if __name__ == "__main__":
  evaluators.define_flags()
  cli.run(main)

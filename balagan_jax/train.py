"""BalaGAN training: modalities (stage 1), then the translation network (stage 2)."""

import functools
import os

import jax
import ml_collections
import numpy as np
from absl import logging
from etils import epath

from balagan_jax import modalities as modalities_lib
from balagan_jax.steps import BalaGAN, TrainState
from i2i_jax import images
from i2i_jax.data import domains, pipeline, sources
from i2i_jax.data.prefetch import DevicePrefetcher
from i2i_jax.errors import ConfigError
from i2i_jax.evaluation import classifier, evaluators
from i2i_jax.evaluation import metrics as metrics_lib
from i2i_jax.training import loop, sharding
from i2i_jax.training.checkpoint import Checkpointer, save_config
from i2i_jax.training.writers import MetricWriter

PAIR_SAMPLINGS = ("images", "modalities")  # see config.pair_sampling


def training_domain(config, num_classes: int | None) -> ml_collections.ConfigDict:
  """The source domain's preprocessing, re-sampling `num_classes` modalities uniformly
  (None: the records as they are, each image equally likely).

  Both domains' records go through it; what defines a domain (its data, colorization)
  lives in its source (`domains.domain_source`), so sizes and augmentation are
  the source domain's. The paper tasks preprocess both domains alike anyway.
  """
  domain = ml_collections.ConfigDict(config.data.source.to_dict())
  domain.class_probs = tuple([1.0 / num_classes] * num_classes) if num_classes else None
  return domain


def check_pair_sampling(config) -> None:
  if config.pair_sampling not in PAIR_SAMPLINGS:
    raise ConfigError(f"unknown config.pair_sampling {config.pair_sampling!r}; expected one "
                      f"of {PAIR_SAMPLINGS}")


def modality_union(config, mods: modalities_lib.Modalities):
  """All training images labelled by modality; without the target if not transductive."""
  parts = [(domains.domain_source(config.data.source), mods.source_labels)]
  if config.transductive:
    parts.append((domains.domain_source(config.data.target), mods.target_labels))
  return sources.RelabelledUnion(parts)


def num_training_classes(config, mods) -> int:
  return mods.num_classes if config.transductive else mods.k_source


def make_streams(config, union, num_classes):
  """Content and reference streams over `union`, drawn independently (their own seeds)
  by `config.pair_sampling`: "images" reads each a shuffled pass over all records, so
  every image is equally likely (the authors' two loaders); "modalities" draws each of
  the `num_classes` modalities with probability 1/num_classes, so every modality pair
  is equally likely."""
  check_pair_sampling(config)
  if config.batch_size % jax.device_count():
    raise ValueError(f"config.batch_size={config.batch_size} must be divisible by the number "
                     f"of devices ({jax.device_count()})")
  domain = training_domain(config, num_classes if config.pair_sampling == "modalities" else None)
  batch = config.batch_size // jax.process_count()
  return {name: iter(pipeline.make_domain_dataset(domain, batch_size=batch,
                                                  seed=config.seed + offset,
                                                  source=union))
          for offset, name in enumerate(("content", "reference"))}


def sharded_batches(streams, mesh) -> DevicePrefetcher:
  """Content and reference batches sharded and put on the devices a step ahead;
  checkpoints record its `positions`, not the streams'."""
  return DevicePrefetcher(streams, functools.partial(sharding.shard_batch, mesh=mesh))


def sample_inputs(config, num: int):
  """Fixed sources from A and references from B for the (source, reference, output) grid."""
  return (pipeline.fixed_batch(config.data.source, num, seed=config.seed)["image"],
          pipeline.fixed_batch(config.data.target, num, seed=config.seed)["image"])


def make_sampler(model: BalaGAN):
  @jax.jit
  def sample(state: TrainState, x, y):
    return model.translate(state.g_ema, x, y)

  return sample


def translation_grid(sample, state, sources, references) -> np.ndarray:
  """Rows: sources, references, outputs G(source, reference) of the EMA generator."""
  return images.make_grid([sources, references, np.asarray(sample(state, sources, references))])


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
      training_domain(config, mods.num_classes), batch_size=config.eval.classifier_batch,
      seed=config.seed + 7, source=union, shard_index=0, shard_count=1))


def target_label_batches(config):
  """B's labelled images: the data of the class-matching judge."""
  return iter(pipeline.make_domain_dataset(
      config.data.target, batch_size=config.eval.classifier_batch, seed=config.seed + 8,
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

  def __init__(self, config, workdir, mods: modalities_lib.Modalities, image_shape, *,
               inception_weights: str, num_eval: int):
    self.config = config
    ev = config.eval
    self.num_modalities = mods.num_classes
    self.inception_weights = inception_weights
    self.sources = pipeline.fixed_batch(config.data.source, num_eval, seed=config.seed + 11)
    self.references = pipeline.fixed_batch(config.data.target, num_eval,
                                           seed=config.seed + 12)["image"]
    self.real = pipeline.fixed_batch(config.data.target, num_eval, seed=config.seed + 13)
    domain = None
    if ev.classifier_steps:
      params = evaluators.cached_classifier(
          os.path.join(workdir, "eval_classifier.msgpack"),
          functools.partial(modality_batches, config, mods), mods.num_classes, image_shape,
          steps=ev.classifier_steps, seed=config.seed)
      domain = metrics_lib.domain_feature_extractor(params, mods.num_classes)
    self.real_features = evaluators.RealFeatures(
        self.real["image"], evaluators.feature_spaces(domain, inception_weights),
        kid_subset_size=ev.kid_subset_size, batch_size=ev.batch_size)
    self.num_labels = shared_label_classes(config) if ev.classifier_steps else 0
    if self.num_labels:
      self.judge = evaluators.cached_classifier(
          os.path.join(workdir, "eval_target_classifier.msgpack"),
          functools.partial(target_label_batches, config), self.num_labels, image_shape,
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
        "class_match": (f"eval_target_classifier.msgpack ({self.num_labels} classes of B's "
                        "labels)" if self.num_labels
                        else "unavailable: the domains do not share labels"),
        "diversity": (f"{self.num_diversity_sources} sources x "
                      f"{self.num_diversity_references} references"),
    }

  def __call__(self, sample, state) -> dict[str, float]:
    translate = functools.partial(sample, state)
    batch = self.config.eval.batch_size
    out, = evaluators.in_batches(translate, (self.sources["image"], self.references), batch)
    scores = self.real_features.score(out, "a_to_b")
    s, r = self.num_diversity_sources, self.num_diversity_references
    grouped, = evaluators.in_batches(
        translate, (np.repeat(self.sources["image"][:s], r, 0),
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


def make_train_step(model: BalaGAN, mesh):
  """The jitted translation step: replicated outputs, the input state donated."""
  repl = sharding.replicated_sharding(mesh)
  return jax.jit(model.train_step, out_shardings=(repl, repl), donate_argnums=(0,))


def restore_or_init(model: BalaGAN, config, checkpointer, streams):
  state = jax.jit(model.init_state)(jax.random.key(config.seed))
  restored = checkpointer.restore(state, streams)
  if restored is None:
    return state, 0
  logging.info("Resumed the translation network from step %d.", restored[1])
  return restored


def train_translation(config, workdir: str, mods: modalities_lib.Modalities) -> TrainState:
  """Stage 2: FUNIT-style translation between all modality pairs."""
  mesh = sharding.make_data_mesh()
  num_classes = num_training_classes(config, mods)
  union = modality_union(config, mods)
  streams = make_streams(config, union, num_classes)
  sample_x, sample_y = sample_inputs(config, config.num_samples)
  model = BalaGAN(config, num_classes, sample_x.shape[1:])
  checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"),
                              max_to_keep=config.max_to_keep,
                              save_interval_steps=config.checkpoint_every)
  state, start_step = restore_or_init(model, config, checkpointer, streams)
  state = sharding.replicate(state, mesh)
  train_step = make_train_step(model, mesh)
  sample = make_sampler(model)
  writer = MetricWriter(os.path.join(workdir, "tensorboard"))
  if start_step == 0:
    writer.write_hparams(config.to_dict())

  def on_metrics(step, metrics):
    scalars = {k: float(v) for k, v in metrics.items()}
    writer.write_scalars(step, scalars)

  def write_samples(step, state):
    grid = translation_grid(sample, state, sample_x, sample_y)
    writer.write_images(step, {"translation": grid})
    if jax.process_index() == 0:
      images.save_png(os.path.join(workdir, "samples", f"translation_{step:07d}.png"), grid)

  actions = [loop.PeriodicAction(config.sample_every, write_samples)]
  if config.eval_every and can_evaluate(config, config.eval.inception_weights):
    evaluator = Evaluator(config, workdir, mods, sample_x.shape[1:],
                          inception_weights=config.eval.inception_weights,
                          num_eval=config.num_eval)

    def evaluate(step, state):
      scores = evaluator(sample, state)
      logging.info("Step %d: %s", step, {k: round(v, 4) for k, v in scores.items()})
      writer.write_scalars(step, {f"eval/{k}": v for k, v in scores.items()})

    actions.append(loop.PeriodicAction(config.eval_every, evaluate))

  with sharded_batches(streams, mesh) as batches:
    state = loop.run(state=state, step_fn=train_step, batches=batches,
                     start_step=start_step, num_steps=config.num_steps,
                     checkpointer=checkpointer, data_iterators=batches.positions,
                     on_metrics=on_metrics, log_every=config.log_every, actions=tuple(actions),
                     writer=writer, nonfinite=config.nonfinite,
                     max_restores=config.max_restores)
  writer.close()
  checkpointer.close()
  return state


def train_and_evaluate(config, workdir: str):
  """Runs the stages named by config.stage; a re-used workdir resumes each stage."""
  if config.stage not in ("all", "modalities", "translation"):
    raise ValueError(f"unknown config.stage {config.stage!r}; expected 'all', 'modalities' "
                     "or 'translation'")
  check_pair_sampling(config)  # before stage 1, which can take hours
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)
  save_config(workdir, config)
  mods = modalities_lib.find_modalities(config, workdir)
  logging.info("Modalities: %d source + %d target.", mods.k_source, mods.k_target)
  if config.stage == "modalities":
    return mods
  return train_translation(config, workdir, mods)

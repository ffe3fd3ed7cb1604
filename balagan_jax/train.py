"""BalaGAN training: modalities (stage 1), then the translation network (stage 2).

What is BalaGAN's own lives here (the stages, the content and reference streams);
the shared `i2i_jax.training.trainer` runs the loop, checkpoints and TensorBoard.
"""

import jax
import ml_collections
from absl import logging

from balagan_jax import evaluate
from balagan_jax import modalities as modalities_lib
from balagan_jax.method import BalaGAN, TrainState
from i2i_jax.data import domains, pipeline, sources
from i2i_jax.errors import ConfigError
from i2i_jax.training import hosts, sharding, trainer
from i2i_jax.training.checkpoint import save_config

PAIR_SAMPLINGS = ("images", "modalities")  # see config.pair_sampling
STAGES = ("all", "modalities", "translation")  # see config.stage

put_batch = sharding.shard_batch  # content and reference batches, split along the batch


def check_pair_sampling(config) -> None:
  if config.pair_sampling not in PAIR_SAMPLINGS:
    raise ConfigError(f"unknown config.pair_sampling {config.pair_sampling!r}; expected one "
                      f"of {PAIR_SAMPLINGS}")


def modality_union(config, mods: modalities_lib.Modalities) -> sources.RelabelledUnion:
  """All training images labelled by modality; without the target if not transductive."""
  parts = [(domains.domain_source(config.data.source), mods.source_labels)]
  if config.transductive:
    parts.append((domains.domain_source(config.data.target), mods.target_labels))
  return sources.RelabelledUnion(parts)


def make_streams(config, union, num_modalities):
  """Content and reference streams over `union`, drawn independently (their own seeds)
  by `config.pair_sampling`: "images" reads each a shuffled pass over all records, so
  every image is equally likely (the authors' two loaders); "modalities" draws each of
  the `num_modalities` modalities with probability 1/num_modalities, so every modality pair
  is equally likely."""
  check_pair_sampling(config)
  batch = sharding.per_host_batch_size(config.batch_size)
  domain = modalities_lib.training_domain(
      config, num_modalities if config.pair_sampling == "modalities" else None)
  return {name: iter(pipeline.make_domain_dataset(domain, batch_size=batch,
                                                  seed=config.seed + offset, source=union))
          for offset, name in enumerate(("content", "reference"))}


def train_translation(config, workdir: str, mods: modalities_lib.Modalities) -> TrainState:
  """Stage 2: FUNIT-style translation between all modality pairs."""
  num_modalities = modalities_lib.num_training_modalities(config, mods)
  streams = make_streams(config, modality_union(config, mods), num_modalities)
  sources_a, references_b = evaluate.sample_inputs(config, config.num_samples)
  model = BalaGAN(config, num_modalities, sources_a.shape[1:])
  stage = trainer.Trainer(workdir, jax.jit(model.init_state)(jax.random.key(config.seed)),
                          streams, trainer.Schedule.from_config(config))
  sample = evaluate.make_sampler(model)

  def sample_grids(state, step):
    del step  # the same sources and references every time
    return {"translation": evaluate.translation_grid(sample, state, sources_a, references_b)}

  evaluator = None
  # Process 0 evaluates alone (`trainer.Trainer.run`): only it trains or reads the judges.
  if (config.eval_every and hosts.is_primary()
      and evaluate.can_evaluate(config, config.eval.inception_weights)):
    evaluator = evaluate.Evaluator(config, workdir, mods, model,
                                   inception_weights=config.eval.inception_weights,
                                   num_eval=config.num_eval)
  return stage.run(model.train_step, put_batch, hparams=config.to_dict(),
                   sample_grids=sample_grids, evaluate=evaluator)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str):
  """Runs the stages named by config.stage; a re-used workdir resumes each stage."""
  if config.stage not in STAGES:
    raise ValueError(f"unknown config.stage {config.stage!r}; expected 'all', 'modalities' "
                     "or 'translation'")
  check_pair_sampling(config)  # before stage 1, which can take hours
  save_config(workdir, config)
  mods = modalities_lib.find_modalities(config, workdir)
  logging.info("Modalities: %d source + %d target.", mods.k_source, mods.k_target)
  if config.stage == "modalities":
    return mods
  return train_translation(config, workdir, mods)

"""BalaGAN training: modalities (stage 1), then the translation network (stage 2)."""

import os

import jax
import ml_collections
import numpy as np
from absl import logging
from etils import epath

from balagan_jax import modalities as modalities_lib
from balagan_jax.steps import BalaGAN, TrainState
from i2i_jax import datasets, images, input_pipeline, loop, sharding
from i2i_jax.checkpoint import Checkpointer, save_config
from i2i_jax.writers import MetricWriter


def training_domain(config, num_classes: int) -> ml_collections.ConfigDict:
  """The source domain's preprocessing, re-sampling modalities uniformly.

  Both domains' records go through it; what defines a domain (its data, colorization)
  lives in its source (`input_pipeline.domain_source`), so sizes and augmentation are
  the source domain's. The paper tasks preprocess both domains alike anyway.

  Drawing content and reference modalities independently and uniformly covers the
  (k+1)^2 modality pairs evenly (Section 3.2), whatever the cluster sizes.
  """
  domain = ml_collections.ConfigDict(config.data.source.to_dict())
  domain.class_probs = tuple([1.0 / num_classes] * num_classes)
  return domain


def modality_union(config, mods: modalities_lib.Modalities):
  """All training images labelled by modality; without the target if not transductive."""
  parts = [(input_pipeline.domain_source(config.data.source), mods.source_labels)]
  if config.transductive:
    parts.append((input_pipeline.domain_source(config.data.target), mods.target_labels))
  return datasets.RelabelledUnion(parts)


def num_training_classes(config, mods) -> int:
  return mods.num_classes if config.transductive else mods.k_source


def make_streams(config, union, num_classes):
  """Content and reference streams: independent uniform draws over the modalities."""
  if config.batch_size % jax.device_count():
    raise ValueError(f"config.batch_size={config.batch_size} must be divisible by the number "
                     f"of devices ({jax.device_count()})")
  domain = training_domain(config, num_classes)
  batch = config.batch_size // jax.process_count()
  return {name: iter(input_pipeline.make_domain_dataset(domain, batch_size=batch,
                                                        seed=config.seed + offset,
                                                        source=union))
          for offset, name in enumerate(("content", "reference"))}


def sharded_batches(streams, mesh):
  while True:
    yield sharding.shard_batch({k: next(it) for k, it in streams.items()}, mesh)


def sample_inputs(config, num: int):
  """Fixed sources from A and references from B for the (source, reference, output) grid."""
  return (input_pipeline.fixed_batch(config.data.source, num, seed=config.seed)["image"],
          input_pipeline.fixed_batch(config.data.target, num, seed=config.seed)["image"])


def make_sampler(model: BalaGAN):
  @jax.jit
  def sample(state: TrainState, x, y):
    return model.translate(state.g_ema, x, y)

  return sample


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
  train_step = jax.jit(model.train_step, out_shardings=(sharding.replicated_sharding(mesh),) * 2,
                       donate_argnums=(0,))
  sample = make_sampler(model)
  writer = MetricWriter(os.path.join(workdir, "tensorboard"))
  if start_step == 0:
    writer.write_hparams(config.to_dict())

  def on_metrics(step, metrics):
    scalars = {k: float(v) for k, v in metrics.items()}
    if scalars.get("finite", 1.0) < 1.0:
      logging.warning("Step %d: non-finite losses or gradients in %.0f%% of the last steps; "
                      "those updates were skipped.", step, 100 * (1 - scalars["finite"]))
    writer.write_scalars(step, scalars)

  def write_samples(step, state):
    out = np.asarray(sample(state, sample_x, sample_y))
    grid = images.make_grid([sample_x, sample_y, out])  # source / reference / output
    writer.write_images(step, {"translation": grid})
    if jax.process_index() == 0:
      images.save_png(os.path.join(workdir, "samples", f"translation_{step:07d}.png"), grid)

  state = loop.run(state=state, step_fn=train_step, batches=sharded_batches(streams, mesh),
                   start_step=start_step, num_steps=config.num_steps, checkpointer=checkpointer,
                   data_iterators=streams, on_metrics=on_metrics, log_every=config.log_every,
                   actions=(loop.PeriodicAction(config.sample_every, write_samples),),
                   writer=writer)
  writer.close()
  checkpointer.close()
  return state


def train_and_evaluate(config, workdir: str):
  """Runs the stages named by config.stage; a re-used workdir resumes each stage."""
  if config.stage not in ("all", "modalities", "translation"):
    raise ValueError(f"unknown config.stage {config.stage!r}; expected 'all', 'modalities' "
                     "or 'translation'")
  epath.Path(workdir).mkdir(parents=True, exist_ok=True)
  save_config(workdir, config)
  mods = modalities_lib.find_modalities(config, workdir)
  logging.info("Modalities: %d source + %d target.", mods.k_source, mods.k_target)
  if config.stage == "modalities":
    return mods
  return train_translation(config, workdir, mods)

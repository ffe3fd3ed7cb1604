"""The real jitted training steps of both methods on synthetic batches.

The throughput and profile scripts build their steps here, so both time the same
thing: the step functions training runs (`JDBW.train_step`, `BalaGAN.train_step`, the
contrastive encoder step) on random batches of the configured shapes.
"""

import jax
import jax.numpy as jnp
import numpy as np

from balagan_jax import encoder
from balagan_jax.method import BalaGAN
from i2i_jax.benchmark import Workload
from i2i_jax.training.state import compute_dtype
from jdbw_jax.method import JDBW, critic_loop_kind


def dtype_name(config) -> str:
  resolved = jnp.dtype(compute_dtype(config.compute_dtype)).name
  return resolved if resolved == config.compute_dtype else f"{resolved} ({config.compute_dtype})"


def jdbw(config) -> Workload:
  """One generator step with its d critic steps: one jitted call, batches (d + 1, B, ...)."""
  size = config.data.source.image_size
  shapes = [(size, size, domain.channels) for domain in (config.data.source, config.data.target)]
  model = JDBW(config, *shapes)
  rng = np.random.default_rng(0)
  lead = (config.d_steps + 1, config.batch_size)

  def domain(shape):
    return {"image": rng.uniform(-1, 1, lead + shape).astype(np.float32),
            "label": rng.integers(0, max(config.data.num_classes, 1), lead).astype(np.int32)}

  loop = critic_loop_kind(config.critic_loop)
  flops_step_fn = None
  if loop == "scan":
    unrolled = config.copy_and_resolve_references()
    unrolled.critic_loop = "unrolled"
    flops_step_fn = JDBW(unrolled, *shapes).train_step
  return Workload(
      title=(f"JD-BW {size}x{size}, batch {config.batch_size}, {config.d_steps} critic steps "
             f"per generator step ({loop}), {dtype_name(config)}"),
      step_fn=model.train_step, state=jax.jit(model.init_state)(jax.random.key(0)),
      batch={"x": domain(shapes[0]), "y": domain(shapes[1])},
      images_per_step=config.batch_size, flops_step_fn=flops_step_fn)


def balagan_translation(config, num_modalities: int) -> Workload:
  """One D update, one G update and the EMA (the authors' order) in one jitted call."""
  size, channels = config.data.source.image_size, config.data.source.channels
  model = BalaGAN(config, num_modalities, (size, size, channels))
  rng = np.random.default_rng(0)

  def domain():
    return {"image": rng.uniform(-1, 1, (config.batch_size, size, size, channels)).astype(
                np.float32),
            "label": rng.integers(0, num_modalities, config.batch_size).astype(np.int32)}

  return Workload(
      title=(f"BalaGAN translation step {size}x{size}, batch {config.batch_size}, "
             f"{num_modalities} modalities, {dtype_name(config)}"),
      step_fn=model.train_step, state=jax.jit(model.init_state)(jax.random.key(0)),
      batch={"content": domain(), "reference": domain()}, images_per_step=config.batch_size)


def balagan_encoder(config) -> Workload:
  """Stage 1's SimCLR step: two augmented views of each image, NT-Xent."""
  size = config.data.source.image_size
  batch = config.encoder.batch_size
  images = np.random.default_rng(0).uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
  return Workload(
      title=(f"BalaGAN contrastive encoder step {size}x{size}, batch {batch} (two views "
             f"each), {dtype_name(config)}"),
      step_fn=encoder.make_step(config),
      state=encoder.init_encoder_state(config, (size, size, 3)),
      batch=dict(zip(encoder.STREAMS, np.split(images, [batch // 2]))),
      images_per_step=batch)

"""A tiny JD-BW configuration and synthetic batches for fast CPU tests."""

import jax
import jax.numpy as jnp
import numpy as np

from config_overrides import apply_overrides
from configs import digits_demo


def tiny_config(**overrides):
  """The embedded demo shrunk to a few channels; still 32x32, as Tables 1 and 2 need."""
  config = digits_demo.get_config()
  config.batch_size = 8
  config.d_steps = 1
  config.model.g_features = 8
  config.model.d_levels = ((4, 8), (8, 8), (8, 16))
  config.model.w_features = 4
  config.num_steps = 4
  config.log_every = 2
  config.sample_every = 4
  config.eval_every = 4
  config.checkpoint_every = 2
  config.num_samples = 4
  config.num_eval = 32
  config.eval.classifier_steps = 2
  config.eval.classifier_batch = 16
  return apply_overrides(config, overrides)


def synthetic_batch(config, seed=0):
  """(d + 1, B, 32, 32, 1) images in [-1, 1] and labels for both domains."""
  rng = np.random.default_rng(seed)
  shape = (config.d_steps + 1, config.batch_size, 32, 32, 1)

  def domain():
    return {"image": jnp.asarray(rng.uniform(-1, 1, shape), jnp.float32),
            "label": jnp.asarray(rng.integers(0, 10, shape[:2]), jnp.int32)}

  return {"x": domain(), "y": domain()}


def leaves_differ(a, b) -> bool:
  """True when every leaf of `a` differs somewhere from the matching leaf of `b`."""
  return all(bool(jnp.any(u != v)) for u, v in
             zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))

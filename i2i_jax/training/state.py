"""Pure-functional network state and the method-agnostic parts of a training step."""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class NetState(struct.PyTreeNode):
  """One network's trainable state: parameters, non-trainable stats, optimizer state.

  `batch_stats` holds spectral-norm power iterations (or batch-norm averages); it is an
  empty dict for networks that have none. Optimizers live outside the state so the
  state is a plain pytree that orbax saves and jit shards.
  """

  params: Any
  batch_stats: Any
  opt_state: Any

  @classmethod
  def create(cls, variables, tx: optax.GradientTransformation) -> "NetState":
    params = variables["params"]
    return cls(params=params, batch_stats=variables.get("batch_stats", {}),
               opt_state=tx.init(params))

  @property
  def variables(self):
    return {"params": self.params, "batch_stats": self.batch_stats}

  def apply_gradients(self, grads, tx: optax.GradientTransformation, batch_stats=None):
    updates, opt_state = tx.update(grads, self.opt_state, self.params)
    return self.replace(params=optax.apply_updates(self.params, updates), opt_state=opt_state,
                        batch_stats=self.batch_stats if batch_stats is None else batch_stats)


def compute_dtype(name: str):
  """Resolves config.compute_dtype; parameters and optimizer state stay float32.

  "auto" is bfloat16 on accelerators, whose matrix units run it at several times the
  float32 rate, and float32 on CPU, where XLA emulates bfloat16 convolutions slowly.
  """
  if name == "auto":
    name = "float32" if jax.default_backend() == "cpu" else "bfloat16"
  try:
    return COMPUTE_DTYPES[name]
  except KeyError:
    raise ValueError(f"unknown config.compute_dtype {name!r}; expected 'auto' or one of "
                     f"{sorted(COMPUTE_DTYPES)}") from None


def apply_with_stats(module: nn.Module, variables, *args, update_stats: bool, **kwargs):
  """Runs `module`, returning (output, batch_stats) with stats advanced if asked."""
  if update_stats and variables.get("batch_stats"):
    out, mutated = module.apply(variables, *args, update_stats=True, mutable=["batch_stats"],
                                **kwargs)
    return out, mutated["batch_stats"]
  return module.apply(variables, *args, update_stats=False, **kwargs), variables.get(
      "batch_stats", {})


def all_finite(tree) -> jax.Array:
  """True when every leaf of `tree` is finite (used to guard against divergence)."""
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)

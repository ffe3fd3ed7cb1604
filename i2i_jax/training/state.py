"""Pure-functional network state and the method-agnostic parts of a training step."""

import functools
import operator
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
  empty dict for networks that have none. The optimizer `tx` is a static field (as in
  flax's `TrainState`): it travels with the state but is no leaf, so orbax saves and
  jit shards the arrays alone.
  """

  params: Any
  batch_stats: Any
  opt_state: Any
  tx: optax.GradientTransformation = struct.field(pytree_node=False)

  @classmethod
  def create(cls, variables, tx: optax.GradientTransformation) -> "NetState":
    params = variables["params"]
    return cls(params=params, batch_stats=variables.get("batch_stats", {}),
               opt_state=tx.init(params), tx=tx)

  @property
  def variables(self):
    return {"params": self.params, "batch_stats": self.batch_stats}

  def apply_gradients(self, grads, batch_stats=None):
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
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


def keep_finite_update(state, new, **finite: jax.Array):
  """`new` if every network's check in `finite` holds, else `state`'s networks with
  `new`'s step and rng: a diverged update is never applied, yet the step counts.

  Returns (state, metrics): `finite` (0 = update skipped) and `finite_<network>` per
  check, which the loop's log line names (`loop.skipped_updates`).
  """
  ok = functools.reduce(operator.and_, finite.values())
  kept = jax.tree_util.tree_map(lambda a, b: jnp.where(ok, a, b), new,
                                state.replace(step=new.step, rng=new.rng))
  metrics = {"finite": ok.astype(jnp.float32)}
  metrics.update({f"finite_{name}": check.astype(jnp.float32) for name, check in finite.items()})
  return kept, metrics

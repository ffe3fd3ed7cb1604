"""Batch weight: per-sample weights that re-balance mode frequencies inside a batch.

Two schemes from "Batch weight for domain adaptation with mass shift":
  * two-sided (Algorithm 1, Eq. 12): both pair sets are re-weighted by (1 + w) / 2 with
    sigmoid weights w in (0, 1), so no sample ever gets less than half its weight;
  * one-sided (Algorithm 2, Eq. 6): only the x side is re-weighted, by a softmax over
    the (global) batch, which enforces E[W] = 1 and W >= 0.
Weights are normalised so that "no batch weight" is all ones and losses are batch means.

Clipping (Section 4.3, Appendix B.1) bounds the ratio between the highest and lowest
weight in a batch; the bound relaxes over training on a schedule (`clip_ratio`).
"""

import jax
import jax.numpy as jnp
import numpy as np

from i2i_jax.errors import ConfigError

WEIGHTED_SCHEMES = ("two_sided", "one_sided")
SCHEMES = WEIGHTED_SCHEMES + ("none",)  # "none": all weights one (a plain joint critic)


def clip_ratio(step, *, start: float, end: float, relax_steps: int) -> jax.Array:
  """Highest/lowest weight ratio allowed at `step`: geometric from `start` to `end`.

  A ratio of 0 or less (or `start` <= 0) means no clipping and is returned as +inf.
  """
  if start <= 0 or end <= 0:
    return jnp.asarray(jnp.inf, jnp.float32)
  frac = jnp.clip(jnp.asarray(step, jnp.float32) / max(relax_steps, 1), 0.0, 1.0)
  return jnp.exp(np.log(start) + frac * (np.log(end) - np.log(start)))


def clip_sigmoid_logits(logits: jax.Array, ratio: jax.Array) -> jax.Array:
  """Clips logits to [-log r, log r]: then sigmoid(max) / sigmoid(min) <= r.

  For sigmoids s(c) / s(-c) = e^c exactly, so c = log r is the tightest bound, and
  averages of such sigmoids (the composite network) obey the same bound.
  """
  c = jnp.log(jnp.maximum(ratio, 1.0))
  return jnp.clip(logits, -c, c)


def clip_softmax_logits(logits: jax.Array, ratio: jax.Array) -> jax.Array:
  """Clips logits to [max - log r, max]: then the softmax max/min ratio is <= r."""
  top = jax.lax.stop_gradient(jnp.max(logits))
  return jnp.maximum(logits, top - jnp.log(jnp.maximum(ratio, 1.0)))


def sigmoid_weights(logits: jax.Array) -> jax.Array:
  """Sigmoid weight per sample; composite logits (B, 2) average their two sigmoids."""
  w = jax.nn.sigmoid(logits)
  return w.mean(axis=-1) if w.ndim == 2 else w


def two_sided_weights(logits_x, logits_y, ratio, normalize: bool = False):
  """Algorithm 1: pair weights (1 + w)/2 and (1 + v)/2 with clipped sigmoid w, v.

  As written, Algorithm 1 leaves each side's total weight free, so W can lower the
  squared critic gap by scaling a whole side (all x weights to 1/2, all y weights to
  1) instead of re-weighting samples, and that total shifts with D's arbitrary offset.
  `normalize` divides each side by its (global) batch mean: the re-weighted samples
  then stay probability measures, as Eqs. 10-12 assume (E_P[w] = 1), and Algorithm 2's
  softmax enforces for the one-sided weights; only relative weights remain.
  """
  wx = sigmoid_weights(clip_sigmoid_logits(logits_x, ratio))
  wy = sigmoid_weights(clip_sigmoid_logits(logits_y, ratio))
  ax, ay = 0.5 * (1.0 + wx), 0.5 * (1.0 + wy)
  if normalize:
    ax, ay = ax / jnp.mean(ax), ay / jnp.mean(ay)
  return ax, ay


def one_sided_weights(logits_x, logits_y, ratio):
  """Algorithm 2: softmax over the batch on the x side (scaled to mean 1), ones on y.

  Composite logits (B, 2) are summed: the log-odds of the two networks add up.
  The softmax runs over the global batch: under a data-parallel mesh XLA inserts the
  cross-device reductions, so every device sees the same normaliser.
  """
  del logits_y
  lx = logits_x.sum(axis=-1) if logits_x.ndim == 2 else logits_x
  lx = clip_softmax_logits(lx, ratio)
  wx = jax.nn.softmax(lx) * lx.shape[0]
  return wx, jnp.ones_like(wx)


def pair_weights(scheme: str, logits_x, logits_y, ratio, normalize: bool = False):
  """Weights for the x pairs (x, Gxy x) and the y pairs (Gyx y, y), both mean ~1
  (exactly 1 for one_sided's x side, and for two_sided with `normalize`).

  Scheme "none" has no weighting networks to give logits: its weights are ones
  (`method.JDBW.pair_weights`).
  """
  if scheme == "two_sided":
    return two_sided_weights(logits_x, logits_y, ratio, normalize)
  if scheme == "one_sided":
    return one_sided_weights(logits_x, logits_y, ratio)
  raise ConfigError(f"unknown batch weight scheme {scheme!r}; expected one of "
                    f"{WEIGHTED_SCHEMES}")


def weighted_critic_gap(d_x, d_y, weights_x, weights_y):
  """L- - L+ of Algorithms 1-2: mean D(x, Gxy x) a_x - mean D(Gyx y, y) a_y.

  D maximises it, the generators minimise it, and W minimises its square (Eq. 7).
  Means instead of the paper's sums: Adam is invariant to the scale, and means keep
  the numbers comparable across batch sizes.
  """
  return jnp.mean(d_x * weights_x) - jnp.mean(d_y * weights_y)


def class_weight_shares(weights, labels, num_classes: int):
  """Share of the batch's total weight held by each class (the paper's Figure 3).

  Labels only monitor training; samples with label -1 count towards no class.
  """
  onehot = jax.nn.one_hot(labels, num_classes, dtype=weights.dtype)
  return (weights[:, None] * onehot).sum(0) / jnp.maximum(weights.sum(), 1e-12)

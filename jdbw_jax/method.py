"""The JD-BW method: its networks, train state and step functions.

One training step is a generator/weight update followed by d critic updates:
Algorithm 1 (two-sided) and Algorithm 2 (one-sided) of the paper, with a joint
discriminator D(x, y) on the pairs (x, Gxy(x)) and (Gyx(y), y). The d critic steps run
inside the same jitted call (`lax.scan`, or unrolled on CPU), so one dispatch covers a
whole generator step.
"""

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from i2i_jax.training.state import (NetState, all_finite, apply_with_stats, compute_dtype,
                                    keep_finite_update)
from jdbw_jax import batch_weight, models

sg = jax.lax.stop_gradient


class TrainState(struct.PyTreeNode):
  """Everything a run needs to continue: generators, critic, weighting nets (each with its
  optimizer), rng, step."""

  step: jax.Array
  rng: jax.Array
  g: NetState  # params {"xy": Gxy, "yx": Gyx}
  d: NetState
  w: NetState


def adam(lr: float, optim_cfg) -> optax.GradientTransformation:
  """Adam(beta1=.5, beta2=.999), Section 4.4."""
  return optax.adam(lr, b1=optim_cfg.b1, b2=optim_cfg.b2, eps=optim_cfg.eps)


class JDBW:
  """Networks and jittable step functions for one JD-BW configuration.

  Holds no arrays: all state (optimizers included) travels in `TrainState`, so steps
  are pure functions.
  """

  def __init__(self, config, x_shape, y_shape):
    """x_shape / y_shape: (H, W, C) of the source and target images."""
    self.config = config
    mcfg = config.model
    dtype = compute_dtype(config.compute_dtype)
    self.x_shape, self.y_shape = tuple(x_shape), tuple(y_shape)
    self.gen_xy = models.build_generator(mcfg, out_channels=y_shape[-1], dtype=dtype)
    self.gen_yx = models.build_generator(mcfg, out_channels=x_shape[-1], dtype=dtype)
    self.disc = models.build_discriminator(mcfg, dtype=dtype)
    self.scheme = config.batch_weight.scheme
    if self.scheme not in batch_weight.SCHEMES:
      raise ValueError(f"unknown config.batch_weight.scheme {self.scheme!r}; expected one of "
                       f"{batch_weight.SCHEMES}")
    self.wnets = models.build_weight_networks(mcfg, config.batch_weight.variant, dtype=dtype)
    self.noise_dim = mcfg.noise_dim
    self.num_classes = config.data.num_classes

  # ---------------------------------------------------------------- set-up
  def init_state(self, rng) -> TrainState:
    rng, kxy, kyx, kd, kw = jax.random.split(rng, 5)
    x = jnp.zeros((1,) + self.x_shape, jnp.float32)
    y = jnp.zeros((1,) + self.y_shape, jnp.float32)
    z = jnp.zeros((1, self.noise_dim), jnp.float32)
    g_xy = self.gen_xy.init(kxy, x, z, update_stats=False)
    g_yx = self.gen_yx.init(kyx, y, z, update_stats=False)
    g_vars = {"params": {"xy": g_xy["params"], "yx": g_yx["params"]},
              "batch_stats": {"xy": g_xy.get("batch_stats", {}),
                              "yx": g_yx.get("batch_stats", {})}}
    d_vars = self.disc.init(kd, x, y, update_stats=False)
    w_vars = self.wnets.init(kw, x, y, x, y)
    optim = self.config.optim
    return TrainState(step=jnp.zeros((), jnp.int32), rng=rng,
                      g=NetState.create(g_vars, adam(optim.lr_g, optim)),
                      d=NetState.create(d_vars, adam(optim.lr_d, optim)),
                      w=NetState.create(w_vars, adam(optim.lr_w, optim)))

  def sample_noise(self, rng, batch: int) -> jax.Array:
    """z ~ U(-1, 1)^d: "noise vector, sampled uniformly" (Section 4.3)."""
    return jax.random.uniform(rng, (batch, self.noise_dim), minval=-1.0, maxval=1.0)

  # ---------------------------------------------------------------- pieces
  def translate(self, g_params, g_stats, x, y, zx, zy, update_stats=False):
    """(Gxy(x, zx), Gyx(y, zy), new generator stats)."""
    gx, s_xy = apply_with_stats(self.gen_xy, {"params": g_params["xy"], "batch_stats": g_stats["xy"]},
                                x, zx, update_stats=update_stats)
    gy, s_yx = apply_with_stats(self.gen_yx, {"params": g_params["yx"], "batch_stats": g_stats["yx"]},
                                y, zy, update_stats=update_stats)
    return gx, gy, {"xy": s_xy, "yx": s_yx}

  def critic(self, d_params, d_stats, x, gx, gy, y, update_stats=False):
    """D on both pair sets in one call: (D(x, Gxy x), D(Gyx y, y), new stats)."""
    out, stats = apply_with_stats(self.disc, {"params": d_params, "batch_stats": d_stats},
                                  jnp.concatenate([x, gy]), jnp.concatenate([gx, y]),
                                  update_stats=update_stats)
    b = x.shape[0]
    return out[:b], out[b:], stats

  def pair_weights(self, w_params, x, gx, gy, y, ratio):
    if self.scheme == "none":
      ones = jnp.ones((x.shape[0],), jnp.float32)
      return ones, ones
    logits_x, logits_y = self.wnets.apply({"params": w_params}, x, gx, gy, y)
    return batch_weight.pair_weights(self.scheme, logits_x, logits_y, ratio,
                                     self.config.batch_weight.normalize)

  def gradient_penalty(self, d_params, d_stats, a, b):
    """E[(||grad_(a,b) D(a, b)|| - target)^2] at the training pairs themselves.

    Section 4.3: "gradient penalty at training points (as in Mescheder et al., 2018)
    instead of interpolations between training and reference samples" (WGAN-GP).
    """
    def d_sum(a, b):
      return self.disc.apply({"params": d_params, "batch_stats": d_stats}, a, b,
                             update_stats=False).sum()

    ga, gb = jax.grad(d_sum, argnums=(0, 1))(a, b)
    sq = jnp.sum(ga.reshape(ga.shape[0], -1) ** 2, 1) + jnp.sum(gb.reshape(gb.shape[0], -1) ** 2, 1)
    norms = jnp.sqrt(sq + 1e-12)
    return jnp.mean((norms - self.config.gp_target) ** 2)

  def clip_ratio(self, step):
    c = self.config.batch_weight.clip
    return batch_weight.clip_ratio(step, start=c.start, end=c.end, relax_steps=c.relax_steps)

  # ---------------------------------------------------------------- updates
  def generator_weight_update(self, state: TrainState, x, y, labels_x, labels_y, rng):
    """Generator and weight step of Algorithms 1/2: G minimises L- - L+, W its square."""
    zx, zy = jnp.split(self.sample_noise(rng, 2 * x.shape[0]), 2)
    ratio = self.clip_ratio(state.step)

    def objective(g_params, w_params):
      gx, gy, g_stats = self.translate(g_params, state.g.batch_stats, x, y, zx, zy,
                                       update_stats=True)
      d_x, d_y, _ = self.critic(state.d.params, state.d.batch_stats, x, gx, gy, y)
      ax, ay = self.pair_weights(w_params, x, sg(gx), sg(gy), y, ratio)
      gap_g = batch_weight.weighted_critic_gap(d_x, d_y, sg(ax), sg(ay))
      gap_w = batch_weight.weighted_critic_gap(sg(d_x), sg(d_y), ax, ay)
      # One backward pass: G's gradient comes from gap_g only, W's from gap_w^2 only.
      return gap_g + gap_w**2, (gap_g, gap_w**2, ax, ay, g_stats)

    grads, (gap_g, w_loss, ax, ay, g_stats) = jax.grad(objective, argnums=(0, 1), has_aux=True)(
        state.g.params, state.w.params)
    g = state.g.apply_gradients(grads[0], batch_stats=g_stats)
    w = state.w.apply_gradients(grads[1]) if self.scheme != "none" else state.w
    metrics = {"g_loss": gap_g, "w_loss": w_loss, "clip_ratio": ratio}
    metrics.update(weight_stats("x", ax))
    metrics.update(weight_stats("y", ay))
    if self.num_classes:
      metrics["class_share_x"] = batch_weight.class_weight_shares(ax, labels_x, self.num_classes)
      metrics["class_share_y"] = batch_weight.class_weight_shares(ay, labels_y, self.num_classes)
      metrics["class_freq_x"] = batch_weight.class_weight_shares(jnp.ones_like(ax), labels_x,
                                                                 self.num_classes)
      metrics["class_freq_y"] = batch_weight.class_weight_shares(jnp.ones_like(ay), labels_y,
                                                                 self.num_classes)
    return state.replace(g=g, w=w), metrics, grads

  def critic_update(self, state: TrainState, x, y, rng):
    """One critic step: D maximises L- - L+ minus the gradient penalty."""
    zx, zy = jnp.split(self.sample_noise(rng, 2 * x.shape[0]), 2)
    gx, gy, _ = self.translate(state.g.params, state.g.batch_stats, x, y, zx, zy)
    gx, gy = sg(gx), sg(gy)
    ax, ay = map(sg, self.pair_weights(state.w.params, x, gx, gy, y, self.clip_ratio(state.step)))

    def loss_fn(d_params):
      d_x, d_y, d_stats = self.critic(d_params, state.d.batch_stats, x, gx, gy, y,
                                      update_stats=True)
      gap = batch_weight.weighted_critic_gap(d_x, d_y, ax, ay)
      gp = self.gradient_penalty(d_params, state.d.batch_stats, jnp.concatenate([x, gy]),
                                 jnp.concatenate([gx, y]))
      return -gap + self.config.gp_weight * gp, (gap, gp, d_stats)

    (loss, (gap, gp, d_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.d.params)
    d = state.d.apply_gradients(grads, batch_stats=d_stats)
    return state.replace(d=d), {"d_loss": loss, "critic_gap": gap, "gp": gp}, grads

  def train_step(self, state: TrainState, batch) -> tuple[TrainState, dict[str, Any]]:
    """One generator step: batch["x"|"y"] images are (d + 1, B, H, W, C).

    Slot 0 feeds the generator/weight update, slots 1..d the critic updates (scanned
    or unrolled, see `critic_loop_kind`).
    A step whose losses or gradients are not finite leaves the state unchanged
    (`metrics["finite"]` = 0) instead of writing NaNs into it.
    """
    rng, k_g, k_d = jax.random.split(state.rng, 3)
    x, y = batch["x"]["image"], batch["y"]["image"]
    new, g_metrics, g_grads = self.generator_weight_update(
        state, x[0], y[0], batch["x"]["label"][0], batch["y"]["label"][0], k_g)

    def critic_body(carry, inputs):
      st, finite = carry
      xi, yi, key = inputs
      st, m, grads = self.critic_update(st, xi, yi, key)
      return (st, finite & all_finite((m, grads))), m

    d_keys = jax.random.split(k_d, x.shape[0] - 1)
    carry, inputs = (new, jnp.array(True)), (x[1:], y[1:], d_keys)
    if critic_loop_kind(self.config.critic_loop) == "scan":
      (new, d_finite), d_metrics = jax.lax.scan(critic_body, carry, inputs)
    else:  # The same steps traced one after another: still one jitted call.
      per_step = []
      for i in range(x.shape[0] - 1):
        carry, m = critic_body(carry, jax.tree_util.tree_map(lambda a: a[i], inputs))
        per_step.append(m)
      (new, d_finite) = carry
      d_metrics = jax.tree_util.tree_map(lambda *v: jnp.stack(v), *per_step)
    new, finite_metrics = keep_finite_update(
        state, new.replace(step=state.step + 1, rng=rng),
        g=all_finite((g_metrics, g_grads[0])), w=all_finite(g_grads[1]), d=d_finite)
    metrics = dict(g_metrics)
    metrics.update({k: v.mean() for k, v in d_metrics.items()})
    metrics.update(finite_metrics)
    return new, metrics


def critic_loop_kind(setting: str) -> str:
  """"scan" or "unrolled" for config.critic_loop ("auto" picks by backend).

  Both run the d critic steps inside the one jitted generator step. XLA:CPU executes
  convolutions inside a while loop (what lax.scan lowers to) about 15x slower than
  the same convolutions outside one, so on CPU "auto" traces the steps one after
  another; on GPU/TPU the scan keeps compile time independent of d.
  """
  if setting == "auto":
    return "unrolled" if jax.default_backend() == "cpu" else "scan"
  if setting not in ("scan", "unrolled"):
    raise ValueError(f"unknown config.critic_loop {setting!r}; expected 'auto', 'scan' or "
                     "'unrolled'")
  return setting


def weight_stats(side: str, weights) -> dict[str, jax.Array]:
  """Summaries of one side's pair weights: mean, min, max and max/min ratio."""
  lo, hi = weights.min(), weights.max()
  return {f"weight_{side}_mean": weights.mean(), f"weight_{side}_min": lo,
          f"weight_{side}_max": hi, f"weight_{side}_ratio": hi / jnp.maximum(lo, 1e-12)}

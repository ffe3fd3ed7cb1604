"""BalaGAN's translation step on synthetic data: updates, finiteness, the EMA, ablations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from balagan_jax import steps, train
from balagan_tiny import tiny_config
from i2i_jax import sharding

# The tiny config's modalities in training: k = 5 source clusters (|A| = 200, |B| = 40)
# and the target, so that the step below is the one training compiles (a cache hit).
NUM_CLASSES = 6


def batch(seed=0, size=4):
  rng = np.random.default_rng(seed)
  domain = lambda: {"image": jnp.asarray(rng.uniform(-1, 1, (size, 32, 32, 3)), jnp.float32),
                    "label": jnp.asarray(rng.integers(0, NUM_CLASSES, size), jnp.int32)}
  return {"content": domain(), "reference": domain()}


def changed(a, b):
  return any(bool(jnp.any(u != v)) for u, v in
             zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


@pytest.fixture(scope="module")
def model_state_step():
  """The tiny step jitted, placed and fed as training does; it donates its state, so it
  gets copies."""
  model = steps.BalaGAN(tiny_config(), NUM_CLASSES, (32, 32, 3))
  mesh = sharding.make_data_mesh()
  state = sharding.replicate(jax.jit(model.init_state)(jax.random.key(0)), mesh)
  jitted = train.make_train_step(model, mesh)

  def train_step(state, batch):
    return jitted(jax.tree_util.tree_map(jnp.copy, state), sharding.shard_batch(batch, mesh=mesh))

  return model, state, train_step


def test_one_step_updates_generator_discriminator_and_ema(model_state_step):
  model, state, train_step = model_state_step
  new, metrics = train_step(state, batch())
  assert changed(new.g.params, state.g.params)
  assert changed(new.d.params, state.d.params)
  assert changed(new.g_ema, state.g_ema)
  # EMA with decay 0.999 moves 0.1% of the way towards the new generator.
  leaf = lambda t: jax.tree_util.tree_leaves(t)[0]
  np.testing.assert_allclose(leaf(new.g_ema),
                             0.999 * leaf(state.g_ema) + 0.001 * leaf(new.g.params),
                             rtol=1e-5, atol=1e-7)
  for name in ("d_loss", "g_loss", "r1", "d_cls", "g_rec", "g_fm", "g_adv"):
    assert np.isfinite(float(metrics[name])), name
  assert float(metrics["finite"]) == 1.0
  assert int(new.step) == 1


def test_translation_shape_and_range(model_state_step):
  model, state, _ = model_state_step
  b = batch()
  out = jax.jit(model.translate)(state.g.params, b["content"]["image"], b["reference"]["image"])
  assert out.shape == (4, 32, 32, 3)
  assert float(jnp.abs(out).max()) <= 1.0


def test_non_finite_step_is_skipped(model_state_step):
  _, state, train_step = model_state_step
  b = batch()
  b["reference"]["image"] = b["reference"]["image"].at[0, 0, 0, 0].set(jnp.nan)
  new, metrics = train_step(state, b)
  assert float(metrics["finite"]) == 0.0
  assert not changed(new.g.params, state.g.params)
  assert not changed(new.d.params, state.d.params)


def test_without_classifier_head_has_no_cls_loss():
  model = steps.BalaGAN(tiny_config(use_classifier_head=False), NUM_CLASSES, (32, 32, 3))
  state = jax.jit(model.init_state)(jax.random.key(0))
  _, metrics = jax.jit(model.train_step)(state, batch())
  assert float(metrics["d_cls"]) == 0.0
  assert np.isfinite(float(metrics["d_loss"]))


def test_rmsprop_matches_pytorch_semantics():
  """v = a v + (1 - a) (g + wd p)^2;  p -= lr (g + wd p) / (sqrt(v) + eps)."""
  cfg = tiny_config().optim
  tx = steps.rmsprop(0.1, cfg)
  p, g = jnp.array([1.0, -2.0]), jnp.array([0.5, 0.25])
  updates, _ = tx.update(g, tx.init(p), p)
  d = g + cfg.weight_decay * p
  v = (1 - cfg.rmsprop_decay) * d**2
  np.testing.assert_allclose(updates, -0.1 * d / (jnp.sqrt(v) + cfg.eps), rtol=1e-5)

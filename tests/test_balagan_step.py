"""BalaGAN's translation step on synthetic data: updates, finiteness, the EMA, ablations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from balagan_jax import losses, method
from balagan_tiny import tiny_config
from i2i_jax.training import sharding, trainer

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
  model = method.BalaGAN(tiny_config(), NUM_CLASSES, (32, 32, 3))
  mesh = sharding.make_data_mesh()
  state = sharding.replicate(jax.jit(model.init_state)(jax.random.key(0)), mesh)
  jitted = trainer.jit_train_step(model.train_step, mesh)

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


def funit_updates(model, state, b):
  """Both updates written as FUNIT's trainer does: G run again inside each update, each
  D call on its own batch of B. Returns (D grads, G grads, metrics)."""
  cfg = model.config.loss
  sg = jax.lax.stop_gradient
  x, lx = b["content"]["image"], b["content"]["label"]
  y, ly = b["reference"]["image"], b["reference"]["label"]
  disc = lambda p, images, labels: model.disc.apply({"params": p}, images, labels)

  def d_loss(d_params):
    xt = sg(model.translate(state.g.params, x, y))
    reg, (real, logits) = losses.r1_penalty(lambda i: disc(d_params, i, ly)[:2], y,
                                            has_aux=True)
    l_real, l_fake = (losses.d_hinge_real_loss(real),
                      losses.d_hinge_fake_loss(disc(d_params, xt, ly)[0]))
    l_cls = losses.d_classification_loss(logits, ly)
    return (cfg.gan_w * (l_real + l_fake) + cfg.reg_w * reg + cfg.cls_w * l_cls,
            {"d_real": l_real, "d_fake": l_fake, "r1": reg, "d_cls": l_cls})

  d_grads, d_metrics = jax.grad(d_loss, has_aux=True)(state.d.params)
  new_d = state.d.apply_gradients(d_grads).params

  def g_loss(g_params):
    g = lambda method, *a: model.gen.apply({"params": g_params}, *a, method=method)
    content = g(model.gen.encode_content, x)
    xt = g(model.gen.decode, content, g(model.gen.encode_style, y))
    xr = g(model.gen.decode, content, g(model.gen.encode_style, x))
    adv_t, _, feat_t = disc(new_d, xt, ly)
    adv_r, _, feat_r = disc(new_d, xr, lx)
    feat_y, feat_x = sg(disc(new_d, y, ly)[2]), sg(disc(new_d, x, lx)[2])
    l_adv = 0.5 * (losses.g_adversarial_loss(adv_t) + losses.g_adversarial_loss(adv_r))
    l_rec = losses.reconstruction_loss(xr, x)
    l_fm = (losses.feature_matching_loss(feat_r, feat_x)
            + losses.feature_matching_loss(feat_t, feat_y))
    return (cfg.gan_w * l_adv + cfg.r_w * l_rec + cfg.fm_w * l_fm,
            {"g_adv": l_adv, "g_rec": l_rec, "g_fm": l_fm})

  g_grads, g_metrics = jax.grad(g_loss, has_aux=True)(state.g.params)
  return d_grads, g_grads, {**d_metrics, **g_metrics}


def test_step_equals_funits_updates(model_state_step):
  """The step's shared generator pass and D's batches of 2B change no number: gradients
  and losses match FUNIT's formulation (G run in both updates, D on batches of B)."""
  model, state, _ = model_state_step
  b = jax.tree_util.tree_map(np.asarray, batch(seed=3))
  _, (d_metrics, d_grads), (g_metrics, g_grads) = jax.jit(model.updates)(state, b)
  metrics = {**d_metrics, **g_metrics}
  want_d, want_g, want_metrics = jax.jit(lambda s: funit_updates(model, s, b))(state)
  for name, value in want_metrics.items():
    np.testing.assert_allclose(metrics[name], value, rtol=1e-5, atol=1e-7, err_msg=name)
  for got, want in ((d_grads, want_d), (g_grads, want_g)):
    got = dict(jax.tree_util.tree_leaves_with_path(got))
    for path, leaf in jax.tree_util.tree_leaves_with_path(want):
      np.testing.assert_allclose(got[path], leaf, rtol=1e-4, atol=1e-6,
                                 err_msg=jax.tree_util.keystr(path))


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
  model = method.BalaGAN(tiny_config(use_classifier_head=False), NUM_CLASSES, (32, 32, 3))
  state = jax.jit(model.init_state)(jax.random.key(0))
  _, metrics = jax.jit(model.train_step)(state, batch())
  assert float(metrics["d_cls"]) == 0.0
  assert np.isfinite(float(metrics["d_loss"]))


def test_rmsprop_matches_pytorch_semantics():
  """v = a v + (1 - a) (g + wd p)^2;  p -= lr (g + wd p) / (sqrt(v) + eps)."""
  cfg = tiny_config().optim
  tx = method.rmsprop(0.1, cfg)
  p, g = jnp.array([1.0, -2.0]), jnp.array([0.5, 0.25])
  updates, _ = tx.update(g, tx.init(p), p)
  d = g + cfg.weight_decay * p
  v = (1 - cfg.rmsprop_decay) * d**2
  np.testing.assert_allclose(updates, -0.1 * d / (jnp.sqrt(v) + cfg.eps), rtol=1e-5)

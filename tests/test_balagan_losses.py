"""BalaGAN losses against hand-computed values (Section 3.2, FUNIT, SimCLR)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from balagan_jax import losses, models


def test_hinge_losses_use_the_labelled_class_map():
  # (B=2, h=1, w=3, K=3): only channel labels[b] of image b may matter.
  maps = jnp.array([[[[0.5, 9.0, 9.0], [2.0, 9.0, 9.0], [-1.0, 9.0, 9.0]]],
                    [[[9.0, 9.0, 0.0], [9.0, 9.0, 0.0], [9.0, 9.0, 3.0]]]])
  labels = jnp.array([0, 2])
  response = models.select_class(maps, labels)
  # real: relu(1 - v) = (0.5, 0, 2, 1, 1, 0) -> mean 4.5 / 6
  np.testing.assert_allclose(losses.d_hinge_real_loss(response), 4.5 / 6, rtol=1e-6)
  # fake: relu(1 + v) = (1.5, 3, 0, 1, 1, 4) -> mean 10.5 / 6
  np.testing.assert_allclose(losses.d_hinge_fake_loss(response), 10.5 / 6, rtol=1e-6)
  # generator: -mean(v) = -(0.5 + 2 - 1 + 0 + 0 + 3) / 6
  np.testing.assert_allclose(losses.g_adversarial_loss(response), -4.5 / 6, rtol=1e-6)
  # Another label reads another channel: all 9s -> no real hinge loss left.
  other = models.select_class(maps, jnp.array([1, 1]))
  np.testing.assert_allclose(losses.d_hinge_real_loss(other), 0.0)


def test_classification_loss_is_mean_cross_entropy():
  logits = np.array([[2.0, 0.0, -1.0], [0.1, 0.2, 0.3]], np.float32)
  labels = np.array([0, 2])
  log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
  expected = -np.mean(log_probs[np.arange(2), labels])
  np.testing.assert_allclose(losses.d_classification_loss(logits, labels), expected, rtol=1e-6)


def test_reconstruction_loss_is_mean_absolute_error():
  x = jnp.array([[0.0, 1.0], [-1.0, 0.5]])
  error = jnp.array([[0.2, -0.4], [0.0, 0.6]])
  np.testing.assert_allclose(losses.reconstruction_loss(x + error, x), 1.2 / 4, rtol=1e-6)


def test_feature_matching_compares_spatial_means():
  fake = jnp.array([[[[1.0, 0.0]], [[3.0, 2.0]]]])  # (1, 2, 1, 2): spatial mean (2, 1)
  real = jnp.array([[[[0.0, 5.0]], [[0.0, 5.0]]]])  # spatial mean (0, 5)
  np.testing.assert_allclose(losses.feature_matching_loss(fake, real), (2.0 + 4.0) / 2, rtol=1e-6)
  # Features that differ only in their layout match exactly (FUNIT pools before L1).
  np.testing.assert_allclose(losses.feature_matching_loss(fake, fake[:, ::-1]), 0.0)


def _tiny_response(params, x):
  """A smooth two-layer conv net with a (B, h, w) patch response, like D_adv's."""
  h = jnp.tanh(jax.lax.conv_general_dilated(x, params["w1"], (1, 1), "SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC")))
  return jnp.tanh(h @ params["w2"])[..., 0]


def test_r1_penalty_matches_finite_differences():
  k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  params = {"w1": jax.random.normal(k1, (3, 3, 2, 4)) * 0.5, "w2": jax.random.normal(k2, (4, 1))}
  x = jax.random.normal(k3, (2, 4, 4, 2))
  fn = lambda images: _tiny_response(params, images)  # noqa: E731

  penalty, response = jax.jit(lambda a: losses.r1_penalty(fn, a))(x)
  np.testing.assert_allclose(response, fn(x), rtol=1e-6)

  # Central differences of mean(response) along every input coordinate (FUNIT's d_out.mean()).
  eps = 1e-2
  basis = jnp.eye(x.size, dtype=x.dtype).reshape((x.size,) + x.shape)
  mean_resp = jax.jit(jax.vmap(lambda d: fn(x + d).mean()))
  grad = np.asarray(mean_resp(eps * basis) - mean_resp(-eps * basis)).reshape(x.shape) / (2 * eps)
  expected = np.sum(grad.astype(np.float64) ** 2) / x.shape[0]
  np.testing.assert_allclose(float(penalty), expected, rtol=1e-2)

  # has_aux passes the extra outputs through.
  penalty_aux, (resp_aux, aux) = losses.r1_penalty(lambda a: (fn(a), a.sum()), x, has_aux=True)
  np.testing.assert_allclose(penalty_aux, penalty, rtol=1e-5)
  np.testing.assert_allclose(aux, x.sum(), rtol=1e-5)


def _nt_xent_by_loops(z_i, z_j, temperature):
  """SimCLR's loss written out: anchor a, positive its other view, all 2N-1 others below."""
  z = np.concatenate([z_i, z_j]).astype(np.float64)
  n2 = len(z)
  total = 0.0
  for a in range(n2):
    positive = (a + n2 // 2) % n2
    sims = []
    for b in range(n2):
      if b != a:
        cos = np.dot(z[a], z[b]) / (np.linalg.norm(z[a]) * np.linalg.norm(z[b]))
        sims.append((b, math.exp(cos / temperature)))
    denominator = sum(s for _, s in sims)
    numerator = dict(sims)[positive]
    total += -math.log(numerator / denominator)
  return total / n2


@pytest.mark.parametrize("temperature", [0.5, 0.1])
def test_nt_xent_matches_explicit_loops(temperature):
  rng = np.random.default_rng(0)
  z_i, z_j = rng.normal(size=(3, 5)).astype(np.float32), rng.normal(size=(3, 5)).astype(np.float32)
  np.testing.assert_allclose(losses.nt_xent_loss(z_i, z_j, temperature),
                             _nt_xent_by_loops(z_i, z_j, temperature), rtol=1e-5)


def test_nt_xent_is_scale_invariant_and_differentiable():
  rng = np.random.default_rng(1)
  z_i, z_j = rng.normal(size=(4, 8)).astype(np.float32), rng.normal(size=(4, 8)).astype(np.float32)
  np.testing.assert_allclose(losses.nt_xent_loss(3 * z_i, z_j), losses.nt_xent_loss(z_i, z_j),
                             rtol=1e-5)
  grads = jax.grad(losses.nt_xent_loss, argnums=(0, 1))(z_i, z_j)
  assert all(bool(jnp.isfinite(g).all()) for g in grads)
  with pytest.raises(ValueError, match="views"):
    losses.nt_xent_loss(z_i, z_j[:2])

"""Batch-weight math against hand-computed cases (Algorithms 1-2, Eq. 12, clipping)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jdbw_tiny
from jdbw_jax import batch_weight, method


def sigmoid(v):
  return 1.0 / (1.0 + np.exp(-np.asarray(v, np.float64)))


def test_one_sided_weights_are_batch_softmax_scaled_to_mean_one():
  logits = jnp.array([0.0, 1.0, 2.0, -1.0])
  wx, wy = batch_weight.one_sided_weights(logits, logits, jnp.inf)
  e = np.exp([0.0, 1.0, 2.0, -1.0])
  np.testing.assert_allclose(wx, 4 * e / e.sum(), rtol=1e-6)
  np.testing.assert_allclose(wx.sum() / 4, 1.0, rtol=1e-6)  # softmax sums to one
  np.testing.assert_array_equal(wy, np.ones(4))


def test_two_sided_weights_match_algorithm_1():
  lx, ly = jnp.array([0.3, -2.0]), jnp.array([1.5, 0.0])
  ax, ay = batch_weight.two_sided_weights(lx, ly, jnp.inf)
  np.testing.assert_allclose(ax, 0.5 * (1 + sigmoid([0.3, -2.0])), rtol=1e-6)
  np.testing.assert_allclose(ay, 0.5 * (1 + sigmoid([1.5, 0.0])), rtol=1e-6)
  # Section 3.3: no sample gets less than half its unweighted weight.
  assert float(jnp.min(jnp.concatenate([ax, ay]))) >= 0.5


def test_normalized_two_sided_weights_keep_only_relative_weights():
  lx, ly = jnp.array([0.3, -2.0, 1.0]), jnp.array([1.5, 0.0, -0.5])
  raw = batch_weight.two_sided_weights(lx, ly, jnp.inf)
  ax, ay = batch_weight.pair_weights("two_sided", lx, ly, jnp.inf, normalize=True)
  for plain, normed in zip(raw, (ax, ay)):
    np.testing.assert_allclose(normed, plain / plain.mean(), rtol=1e-6)
    np.testing.assert_allclose(float(normed.mean()), 1.0, rtol=1e-6)
  # Shifting every logit of a side changes its raw total but, normalised, little else:
  # W can no longer lower the critic gap by scaling a whole side.
  shifted, _ = batch_weight.two_sided_weights(lx - 50.0, ly, jnp.inf, normalize=True)
  np.testing.assert_allclose(shifted, np.ones(3), rtol=1e-6)
  raw_shifted, _ = batch_weight.two_sided_weights(lx - 50.0, ly, jnp.inf)
  np.testing.assert_allclose(raw_shifted, np.full(3, 0.5), rtol=1e-6)


def test_composite_weights_average_two_sigmoids():
  # Appendix B.1: wx = (s(Wx(x)) + s(-Wy(Gxy x))) / 2; signs are folded into the logits.
  lx = jnp.array([[1.0, -3.0], [0.0, 2.0]])
  ax, _ = batch_weight.two_sided_weights(lx, lx, jnp.inf)
  w = 0.5 * (sigmoid([1.0, 0.0]) + sigmoid([-3.0, 2.0]))
  np.testing.assert_allclose(ax, 0.5 * (1 + w), rtol=1e-6)


@pytest.mark.parametrize("ratio", [1.5, 4.0, 30.0])
def test_clipping_bounds_highest_to_lowest_ratio(ratio):
  logits = jnp.linspace(-20.0, 20.0, 64)
  w = batch_weight.sigmoid_weights(batch_weight.clip_sigmoid_logits(logits, jnp.asarray(ratio)))
  assert float(w.max() / w.min()) <= ratio * (1 + 1e-5)
  assert float(w.max() / w.min()) >= ratio * (1 - 1e-3)  # the bound is tight, not loose
  wx, _ = batch_weight.one_sided_weights(logits, logits, jnp.asarray(ratio))
  assert float(wx.max() / wx.min()) <= ratio * (1 + 1e-5)
  np.testing.assert_allclose(float(wx.mean()), 1.0, rtol=1e-5)


def test_clip_ratio_schedule_relaxes_geometrically():
  kw = dict(start=2.0, end=32.0, relax_steps=100)
  np.testing.assert_allclose(batch_weight.clip_ratio(0, **kw), 2.0, rtol=1e-6)
  np.testing.assert_allclose(batch_weight.clip_ratio(50, **kw), 8.0, rtol=1e-5)
  np.testing.assert_allclose(batch_weight.clip_ratio(100, **kw), 32.0, rtol=1e-5)
  np.testing.assert_allclose(batch_weight.clip_ratio(1000, **kw), 32.0, rtol=1e-5)
  assert np.isinf(batch_weight.clip_ratio(10, start=0.0, end=32.0, relax_steps=100))


def test_no_batch_weight_is_all_ones():
  model = method.JDBW(jdbw_tiny.tiny_config(**{"batch_weight.scheme": "none"}), (32, 32, 1),
                      (32, 32, 1))
  images = jnp.zeros((3, 32, 32, 1))
  ax, ay = model.pair_weights(None, images, images, images, images, jnp.inf)
  np.testing.assert_array_equal(ax, np.ones(3))
  np.testing.assert_array_equal(ay, np.ones(3))
  with pytest.raises(ValueError, match="unknown batch weight scheme 'bogus'"):
    batch_weight.pair_weights("bogus", jnp.zeros(3), jnp.zeros(3), jnp.inf)


def test_weighted_critic_gap_and_its_square_gradient():
  d_x, d_y = jnp.array([1.0, 2.0]), jnp.array([0.5, -1.0])
  ax, ay = jnp.array([0.5, 1.0]), jnp.array([1.0, 0.75])
  gap = batch_weight.weighted_critic_gap(d_x, d_y, ax, ay)
  np.testing.assert_allclose(gap, (0.5 + 2.0) / 2 - (0.5 - 0.75) / 2, rtol=1e-6)
  # W's objective (L- - L+)^2 pulls the weighted means together: its gradient w.r.t.
  # the x weights is 2 * gap * d_x / m.
  g = jax.grad(lambda a: batch_weight.weighted_critic_gap(d_x, d_y, a, ay) ** 2)(ax)
  np.testing.assert_allclose(g, 2 * gap * d_x / 2, rtol=1e-6)


def test_class_weight_shares_sum_to_one_and_ignore_unlabelled():
  w = jnp.array([1.0, 3.0, 2.0, 2.0])
  labels = jnp.array([0, 1, 1, -1])
  shares = batch_weight.class_weight_shares(w, labels, 3)
  np.testing.assert_allclose(shares, [1 / 8, 5 / 8, 0.0], rtol=1e-6)

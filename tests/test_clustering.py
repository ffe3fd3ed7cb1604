"""Spherical k-means (Section 3.1) and the rule for the number of modalities."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from balagan_jax import clustering


def matched_accuracy(pred: np.ndarray, truth: np.ndarray, k: int) -> float:
  """Fraction of points labelled right under the best one-to-one relabelling."""
  counts = np.zeros((k, k))
  np.add.at(counts, (truth, pred), 1)
  rows, cols = linear_sum_assignment(-counts)
  return counts[rows, cols].sum() / len(truth)


def planted_clusters(seed: int, k: int, per_cluster: int, dim: int, spread: float):
  """Points scattered around k random directions, at arbitrary norms (h is unnormalised)."""
  rng = np.random.default_rng(seed)
  centres = rng.normal(size=(k, dim))
  centres /= np.linalg.norm(centres, axis=1, keepdims=True)
  truth = np.repeat(np.arange(k), per_cluster)
  points = centres[truth] + spread * rng.normal(size=(len(truth), dim))
  points *= rng.uniform(0.5, 5.0, size=(len(truth), 1))  # norms must not matter
  perm = rng.permutation(len(truth))
  return jnp.asarray(points[perm], jnp.float32), truth[perm], centres


@pytest.mark.parametrize("num_restarts", [1, 3])
def test_recovers_planted_clusters(num_restarts):
  k = 6
  x, truth, centres = planted_clusters(0, k, per_cluster=40, dim=16, spread=0.08)
  centroids, assignments = clustering.spherical_kmeans(jax.random.key(0), x, k,
                                                       num_restarts=num_restarts)
  assignments = np.asarray(assignments)
  assert matched_accuracy(assignments, truth, k) == 1.0
  np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, rtol=1e-5)
  # Each centroid sits on its planted direction.
  assert np.sort(np.max(np.asarray(centroids) @ centres.T, axis=1))[0] > 0.99
  np.testing.assert_array_equal(clustering.assign(x, centroids), assignments)


def test_the_restart_with_the_largest_total_similarity_wins():
  """Unstructured points and two Lloyd steps: the restarts end in different optima."""
  x = jnp.asarray(np.random.default_rng(2).normal(size=(60, 4)), jnp.float32)
  key = jax.random.key(4)
  centroids, assignments, objective = clustering.all_restarts(key, x, 5, num_iters=2,
                                                              num_restarts=6)
  objective = np.asarray(objective)
  best = int(np.argmax(objective))
  assert objective[best] > np.min(objective) + 1e-3  # the choice matters
  chosen = clustering.spherical_kmeans(key, x, 5, num_iters=2, num_restarts=6)
  np.testing.assert_array_equal(chosen[1], assignments[best])
  np.testing.assert_array_equal(chosen[0], centroids[best])


def test_deterministic_per_key():
  x, _, _ = planted_clusters(1, 4, per_cluster=10, dim=8, spread=0.5)
  a = clustering.spherical_kmeans(jax.random.key(3), x, 4)
  b = clustering.spherical_kmeans(jax.random.key(3), x, 4)
  np.testing.assert_array_equal(a[1], b[1])
  np.testing.assert_array_equal(a[0], b[0])


def test_empty_cluster_is_reseeded_from_the_farthest_point():
  # Centroid 2 points away from every sample, so nothing is assigned to it.
  x = jnp.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.7, 0.7]])
  x = clustering.l2_normalize(x)
  centroids = jnp.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -0.0]])
  updated = clustering._lloyd_step(x, centroids)
  # The worst-fitting point is (0.7, 0.7) (cos 0.71 to both live centroids).
  np.testing.assert_allclose(updated[2], x[4], rtol=1e-6)


def test_k_must_fit_the_data():
  with pytest.raises(ValueError, match="k must be"):
    clustering.spherical_kmeans(jax.random.key(0), jnp.ones((3, 2)), 4)


@pytest.mark.parametrize("num_source,num_target,k", [
    (10_000, 1000, 10),  # AFD / CelebA sizes: |B| >= |A| / k needs k >= 10
    (10_001, 1000, 11),
    (7500, 500, 15),  # Stanford cars
    (500, 1000, 1),  # a source no richer than the target is one modality
])
def test_choose_k_is_the_smallest_balancing_k(num_source, num_target, k):
  assert clustering.choose_k(num_source, num_target) == k
  assert num_target >= num_source / k
  assert k == 1 or num_target < num_source / (k - 1)


def test_choose_k_rejects_empty_domains():
  with pytest.raises(ValueError, match="positive"):
    clustering.choose_k(100, 0)

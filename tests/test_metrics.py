"""FID, KID, diversity and class matching against SciPy / NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import linalg
from scipy.spatial import distance
from sklearn import metrics as sklearn_metrics

from i2i_jax.evaluation import classifier
from i2i_jax.evaluation import metrics


def _pytorch_fid_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
  """pytorch-fid's calculate_frechet_distance (scipy sqrtm of the product).

  (pytorch-fid passes disp=False, which SciPy 1.17 deprecates; same result.)
  """
  diff = mu1 - mu2
  covmean = linalg.sqrtm(sigma1.dot(sigma2))
  if not np.isfinite(covmean).all():
    offset = np.eye(sigma1.shape[0]) * eps
    covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
  covmean = covmean.real
  return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


def _features(rng, n, d, shift=0.0):
  """Non-negative, correlated features, like pooled ReLU activations.

  One fixed mixing per d, so equal shifts sample one distribution.
  """
  mixing = np.random.default_rng(d).normal(size=(d, d)) / np.sqrt(d)
  return np.maximum(rng.normal(size=(n, d)) @ mixing + shift, 0).astype(np.float32)


def _random_psd(rng, d, rank):
  a = rng.normal(size=(d, rank))
  return a @ a.T / rank


@pytest.mark.parametrize("d,rank", [(64, 64), (64, 8), (128, 30)])
def test_sqrtm_psd_matches_scipy(d, rank):
  cov = _random_psd(np.random.default_rng(d + rank), d, rank)
  expected = linalg.sqrtm(cov).real
  with jax.enable_x64(True):
    root = np.asarray(metrics.sqrtm_psd(cov))
  np.testing.assert_allclose(root @ root, cov, atol=1e-10)
  np.testing.assert_allclose(root, expected, atol=1e-6)
  # Outside x64 it runs in float32: eigenvalues near 0 carry round-off of about
  # eps * ||cov||, whose square root is the error of a near-singular root.
  float32_error = np.sqrt(np.finfo(np.float32).eps * np.linalg.eigvalsh(cov).max())
  np.testing.assert_allclose(np.asarray(metrics.sqrtm_psd(cov)), expected,
                             atol=2 * float32_error)


@pytest.mark.parametrize("d,n", [(64, 400), (512, 1500), (256, 100)])
def test_fid_matches_pytorch_fid_formula(d, n):
  """Full-rank and rank-deficient (n < d: near-singular covariance) cases."""
  rng = np.random.default_rng(d + n)
  real, fake = _features(rng, n, d), _features(rng, n, d, shift=0.05)
  a, b = metrics.feature_stats(real), metrics.feature_stats(fake)
  expected = _pytorch_fid_distance(a.mean, a.cov, b.mean, b.cov)
  assert metrics.fid(real, fake) == pytest.approx(expected, rel=1e-6)


def test_frechet_distance_of_random_psd_covariances_matches_scipy():
  rng = np.random.default_rng(1)
  stats = [metrics.FeatureStats(rng.normal(size=128), _random_psd(rng, 128, rank), 0)
           for rank in (128, 32)]
  expected = _pytorch_fid_distance(stats[0].mean, stats[0].cov, stats[1].mean, stats[1].cov)
  assert metrics.frechet_distance(*stats) == pytest.approx(expected, rel=1e-6)


def test_feature_stats_is_unbiased_like_np_cov():
  x = np.random.default_rng(0).normal(size=(50, 7))
  stats = metrics.feature_stats(x)
  np.testing.assert_allclose(stats.cov, np.cov(x, rowvar=False, ddof=1))
  np.testing.assert_allclose(stats.mean, x.mean(0))
  assert stats.count == 50 and stats.cov.dtype == np.float64


def test_fid_of_identical_sets_is_zero_and_of_shifted_sets_is_the_squared_shift():
  rng = np.random.default_rng(2)
  real = _features(rng, 600, 256)
  shift = rng.normal(size=256).astype(np.float32) * 0.1
  assert abs(metrics.fid(real, real)) < 1e-8
  # Equal covariances: the trace term vanishes and FID = ||mu1 - mu2||^2.
  expected = float(np.sum(shift.astype(np.float64) ** 2))
  assert metrics.fid(real, real + shift) == pytest.approx(expected, rel=1e-5)


def test_frechet_distance_rejects_mismatched_dimensions():
  a = metrics.feature_stats(np.ones((3, 4)) * np.arange(3)[:, None])
  b = metrics.feature_stats(np.ones((3, 5)) * np.arange(3)[:, None])
  with pytest.raises(ValueError, match=r"\(4,\) vs \(5,\)"):
    metrics.frechet_distance(a, b)


def _numpy_kid(real, fake, num_subsets, subset_size, seed):
  """Straightforward float64 KID: same subset draws, full polynomial kernel."""
  real, fake = real.astype(np.float64), fake.astype(np.float64)
  d = real.shape[1]
  m = min(subset_size, len(real), len(fake))
  rng = np.random.default_rng(seed)
  values = []
  for _ in range(num_subsets):
    x = real[rng.choice(len(real), m, replace=False)]
    y = fake[rng.choice(len(fake), m, replace=False)]
    k_xx, k_yy, k_xy = ((u @ v.T / d + 1) ** 3 for u, v in ((x, x), (y, y), (x, y)))
    values.append((k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
                  + (k_yy.sum() - np.trace(k_yy)) / (m * (m - 1)) - 2 * k_xy.mean())
  return np.mean(values), np.std(values)


@pytest.mark.parametrize("subset_size", [50, 10_000])  # 10_000 is clipped to the smaller set
def test_kid_matches_numpy_reference(subset_size):
  rng = np.random.default_rng(3)
  real, fake = _features(rng, 300, 128), _features(rng, 200, 128, shift=0.1)
  mean, std = metrics.kid(real, fake, num_subsets=5, subset_size=subset_size, seed=7)
  expected_mean, expected_std = _numpy_kid(real, fake, 5, subset_size, seed=7)
  assert mean == pytest.approx(expected_mean, rel=1e-4, abs=1e-7)
  assert std == pytest.approx(expected_std, rel=1e-3, abs=1e-7)


def test_kid_is_near_zero_for_one_distribution_and_grows_with_a_shift():
  rng = np.random.default_rng(4)
  real, same = _features(rng, 400, 64), _features(rng, 400, 64)
  shifted = _features(rng, 400, 64, shift=0.3)
  same_mean, same_std = metrics.kid(real, same, num_subsets=10, subset_size=200)
  identical_mean, _ = metrics.kid(real, real, num_subsets=10, subset_size=200)
  shifted_mean, _ = metrics.kid(real, shifted, num_subsets=10, subset_size=200)
  assert abs(same_mean) < 3 * same_std
  # Identical sets sit at the unbiased estimator's O(1/subset_size) negative bias:
  # overlapping draws put k(x, x) terms into the cross term.
  assert -0.1 * shifted_mean < identical_mean <= 0
  assert shifted_mean > 20 * abs(same_mean)


def test_mean_pairwise_distance_matches_scipy_pdist():
  x = _features(np.random.default_rng(5), 40, 300, shift=2.0)
  expected = distance.pdist(x.astype(np.float64)).mean()
  assert metrics.mean_pairwise_distance(x) == pytest.approx(expected, rel=1e-5)


def test_diversity_averages_per_source_pairwise_distances():
  grouped = np.random.default_rng(6).normal(size=(3, 5, 16)).astype(np.float32)
  grouped[1] = grouped[1, :1]  # a source whose references all give the same output
  expected = np.mean([distance.pdist(g.astype(np.float64)).mean() for g in grouped])
  assert metrics.diversity(grouped) == pytest.approx(expected, rel=1e-5)
  assert metrics.diversity(np.repeat(grouped[:, :1], 4, axis=1)) == pytest.approx(0, abs=1e-6)
  with pytest.raises(ValueError, match=r"\(3, 1, 16\)"):
    metrics.diversity(grouped[:, :1])


def test_class_matching_rate_ignores_unlabelled_sources():
  predicted = np.array([0, 1, 2, 3, 4])
  source = np.array([0, 1, 0, -1, -1])
  assert metrics.class_matching_rate(predicted, source) == pytest.approx(2 / 3)


def _sklearn_scores(assignments, labels):
  """scikit-learn's NMI (arithmetic mean: its default) and ARI, and purity by hand."""
  purity = sum(np.bincount(labels[assignments == c]).max() for c in np.unique(assignments))
  return {"nmi": sklearn_metrics.normalized_mutual_info_score(labels, assignments),
          "ari": sklearn_metrics.adjusted_rand_score(labels, assignments),
          "purity": purity / len(labels)}


@pytest.mark.parametrize("n,k,c,noise", [(500, 8, 5, 0.3), (300, 3, 10, 0.0), (40, 40, 2, 1.0),
                                         (1000, 2, 2, 0.9), (7, 7, 7, 0.5)])
def test_clustering_scores_match_sklearn(n, k, c, noise):
  """Clusters that follow the labels up to `noise` (1: independent of them)."""
  rng = np.random.default_rng(n + k + c)
  labels = rng.integers(0, c, n)
  assignments = np.where(rng.random(n) < noise, rng.integers(0, k, n), labels % k)
  scores = metrics.clustering_scores(assignments, labels)
  expected = _sklearn_scores(assignments, labels)
  assert scores.keys() == expected.keys()
  for name in scores:
    assert scores[name] == pytest.approx(expected[name], rel=1e-9, abs=1e-12), name


def test_clustering_scores_edge_cases():
  labels = np.array([3, 3, 7, 7, 7, 9, 9, 9, 9])
  renamed = np.array([2, 2, 0, 0, 0, 1, 1, 1, 1])  # the same partition, other names
  assert metrics.clustering_scores(renamed, labels) == {"nmi": 1.0, "ari": 1.0, "purity": 1.0}
  assert metrics.clustering_scores(labels, renamed) == {"nmi": 1.0, "ari": 1.0, "purity": 1.0}
  single = np.zeros_like(labels)  # one cluster: no information, purity = the majority share
  for assignments, truth in ((single, labels), (labels, single), (single, single),
                             (np.arange(9), labels), (labels[:1], labels[:1])):
    scores = metrics.clustering_scores(assignments, truth)
    expected = _sklearn_scores(np.unique(assignments, return_inverse=True)[1],
                               np.unique(truth, return_inverse=True)[1])
    for name in scores:
      assert scores[name] == pytest.approx(expected[name], abs=1e-12), (assignments, truth, name)
  assert metrics.clustering_scores(single, labels)["purity"] == pytest.approx(4 / 9)
  assert metrics.clustering_scores(np.arange(9), labels)["purity"] == 1.0  # singletons
  with pytest.raises(ValueError, match="8 and 9"):
    metrics.clustering_scores(labels[:8], labels)


def test_clustering_scores_ari_is_exact_on_large_sets():
  """Pair-count products of 200k items overflow int64; scikit-learn uses Python ints too."""
  rng = np.random.default_rng(9)
  labels = rng.integers(0, 3, 200_000)
  assignments = np.where(rng.random(len(labels)) < 0.5, labels, rng.integers(0, 3, len(labels)))
  assert metrics.clustering_scores(assignments, labels)["ari"] == pytest.approx(
      sklearn_metrics.adjusted_rand_score(labels, assignments), rel=1e-12)


def test_extract_features_batches_with_one_shape_and_keeps_order():
  images = np.random.default_rng(7).uniform(-1, 1, size=(10, 4, 4, 3)).astype(np.float32)
  batch_shapes = []

  def extractor(batch):
    batch_shapes.append(batch.shape)
    return batch.reshape(len(batch), -1)[:, :5].astype(np.float64)

  features = metrics.extract_features(extractor, images, batch_size=4)
  assert batch_shapes == [(4, 4, 4, 3)] * 3
  assert features.dtype == np.float32
  np.testing.assert_array_equal(features, images.reshape(10, -1)[:, :5])


def test_domain_feature_extractor_returns_the_classifiers_penultimate_features():
  model = classifier.DomainClassifier(num_classes=3)
  images = np.random.default_rng(8).uniform(-1, 1, size=(6, 8, 8, 1)).astype(np.float32)
  params = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))["params"]
  features = metrics.extract_features(metrics.domain_feature_extractor(params, 3), images,
                                      batch_size=4)
  _, expected = model.apply({"params": params}, images, return_features=True)
  assert features.shape == (6, 128)
  np.testing.assert_allclose(features, np.asarray(expected), atol=1e-6)

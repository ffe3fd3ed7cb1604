"""Evaluation metrics on image features: FID, KID, class matching, diversity; and
the agreement of a clustering with ground-truth labels (NMI, ARI, purity).

Every metric here works on features, so any extractor fits: the standard FID
Inception-v3 (`inception`, when the user supplies its weights) or a small
classifier trained on the target domain (`domain_feature_extractor`, offline).
Numbers from different extractors are not comparable with each other.

Precision: FID subtracts traces of ~2048x2048 covariances whose values are far
larger than the result, which float32 cannot resolve (x64 is off in this project).
The statistics are therefore kept in float64 numpy and the Frechet distance runs
under `jax.enable_x64` on the CPU backend (available everywhere; TPUs have no
float64 eigh). KID runs in float32 on the default device: its polynomial kernel
is evaluated without its constant term, which cancels exactly in the MMD, so the
float32 sums stay small.
"""

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from i2i_jax.evaluation import classifier

FeatureExtractor = Callable[[np.ndarray], np.ndarray]


def sqrtm_psd(a) -> jax.Array:
  """Square root of a symmetric positive semi-definite matrix, via eigh.

  Computes in the dtype of `a` as jnp sees it: float32 unless called under
  `jax.enable_x64(True)` with float64 input (what `frechet_distance` does).
  Eigenvalues below zero (round-off) are clipped, so the root stays real; near
  zero they carry round-off of about eps * ||a||, so a near-singular root is off
  by about sqrt(eps * ||a||): ~1e-3 relative in float32, ~1e-8 in float64.
  """
  a = jnp.asarray(a)
  a = (a + a.T) / 2
  eigvals, eigvecs = jnp.linalg.eigh(a)
  return (eigvecs * jnp.sqrt(jnp.clip(eigvals, 0))) @ eigvecs.T


def trace_sqrt_product(sigma1, sigma2) -> jax.Array:
  """tr(sqrtm(sigma1 @ sigma2)) for PSD sigma1, sigma2.

  sigma1 @ sigma2 is not symmetric, so a general sqrtm would go complex and
  unstable (pytorch-fid needs an eps fallback); it is similar to the symmetric
  PSD sqrt(s1) s2 sqrt(s1), whose eigenvalues' roots give the same trace.
  Precision as in `sqrtm_psd`.
  """
  root1 = sqrtm_psd(sigma1)
  m = root1 @ jnp.asarray(sigma2) @ root1
  eigvals = jnp.linalg.eigvalsh((m + m.T) / 2)
  return jnp.sum(jnp.sqrt(jnp.clip(eigvals, 0)))


@dataclasses.dataclass(frozen=True)
class FeatureStats:
  """Mean and covariance of a feature set (float64), as FID compares them."""

  mean: np.ndarray
  cov: np.ndarray
  count: int


def feature_stats(features) -> FeatureStats:
  """Mean and unbiased covariance (ddof=1, as pytorch-fid's np.cov) in float64."""
  features = np.asarray(features, np.float64)
  if features.ndim != 2 or features.shape[0] < 2:
    raise ValueError(f"feature_stats needs (N >= 2, D) features, got shape {features.shape}")
  return FeatureStats(mean=features.mean(0), cov=np.cov(features, rowvar=False),
                      count=features.shape[0])


@jax.jit
def _frechet(mu1, sigma1, mu2, sigma2):
  diff = mu1 - mu2
  return (diff @ diff + jnp.trace(sigma1) + jnp.trace(sigma2)
          - 2 * trace_sqrt_product(sigma1, sigma2))


def frechet_distance(a: FeatureStats, b: FeatureStats) -> float:
  """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 sqrtm(S_a S_b)) (Heusel et al., 2017), float64."""
  if a.mean.shape != b.mean.shape:
    raise ValueError(f"feature dimensions differ: {a.mean.shape} vs {b.mean.shape}")
  with jax.enable_x64(True), jax.default_device(jax.devices("cpu")[0]):
    args = [np.asarray(x, np.float64) for x in (a.mean, a.cov, b.mean, b.cov)]
    return float(_frechet(*args))


def fid(real_features, fake_features) -> float:
  """Frechet Inception Distance between two (N, D) feature sets."""
  return frechet_distance(feature_stats(real_features), feature_stats(fake_features))


@jax.jit
def _mmd2_unbiased(x, y):
  """Unbiased MMD^2 with k(x, y) = (x.y/d + 1)^3, minus its constant 1 (cancels)."""
  d = x.shape[1]
  m = x.shape[0]

  def kernel(a, b):
    t = a @ b.T / d
    return t * (t * (t + 3) + 3)  # (t + 1)^3 - 1

  def offdiag_mean(k):
    return (jnp.sum(jnp.sum(k, 1)) - jnp.trace(k)) / (m * (m - 1))

  return (offdiag_mean(kernel(x, x)) + offdiag_mean(kernel(y, y))
          - 2 * jnp.mean(jnp.sum(kernel(x, y), 1)) / m)


def kid(real_features, fake_features, *, num_subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
  """Kernel Inception Distance (Binkowski et al., 2018): (mean, std) over subsets.

  Each subset draws `subset_size` samples without replacement from each set
  (clipped to the smaller set) and estimates the unbiased MMD^2 with the cubic
  polynomial kernel, as torch-fidelity and clean-fid do.
  """
  real = np.asarray(real_features, np.float32)
  fake = np.asarray(fake_features, np.float32)
  if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
    raise ValueError(f"kid needs (N, D) features of one D, got {real.shape} and {fake.shape}")
  size = min(subset_size, len(real), len(fake))
  if size < 2:
    raise ValueError(f"kid needs at least 2 samples per set, got {len(real)} and {len(fake)}")
  rng = np.random.default_rng(seed)
  values = []
  for _ in range(num_subsets):
    x = real[rng.choice(len(real), size, replace=False)]
    y = fake[rng.choice(len(fake), size, replace=False)]
    values.append(float(_mmd2_unbiased(x, y)))
  return float(np.mean(values)), float(np.std(values))


@jax.jit
def _mean_pairwise_distances(features):
  """(..., N, D) -> (...,) mean L2 distance over the N(N-1)/2 unordered pairs."""
  x = features - jnp.mean(features, -2, keepdims=True)  # centring limits cancellation
  sq = jnp.sum(x * x, -1)
  d2 = sq[..., :, None] + sq[..., None, :] - 2 * jnp.einsum("...id,...jd->...ij", x, x)
  n = x.shape[-2]
  off_diagonal = ~jnp.eye(n, dtype=bool)
  dist = jnp.where(off_diagonal, jnp.sqrt(jnp.where(off_diagonal, jnp.maximum(d2, 0), 1)), 0)
  return jnp.sum(dist, (-2, -1)) / (n * (n - 1))


def mean_pairwise_distance(features) -> float:
  """Mean L2 distance over all unordered pairs of (N, D) features: a diversity score."""
  features = np.asarray(features, np.float32)
  if features.ndim != 2 or features.shape[0] < 2:
    raise ValueError(f"mean_pairwise_distance needs (N >= 2, D) features, got {features.shape}")
  return float(_mean_pairwise_distances(features))


def diversity(grouped_features) -> float:
  """BalaGAN diversity without LPIPS: mean over sources of the mean pairwise distance.

  grouped_features is (S, R, D): each of S sources translated with R references.
  """
  grouped = np.asarray(grouped_features, np.float32)
  if grouped.ndim != 3 or grouped.shape[1] < 2:
    raise ValueError(f"diversity needs (S, R >= 2, D) features, got shape {grouped.shape}")
  return float(jnp.mean(_mean_pairwise_distances(grouped)))


def class_matching_rate(predicted_labels, source_labels) -> float:
  """Share of translations classified as their source's class; labels < 0 are ignored."""
  return classifier.accuracy(predicted_labels, source_labels)


def clustering_scores(assignments, labels) -> dict[str, float]:
  """NMI, ARI and purity of a clustering against ground-truth labels (any integers).

  NMI divides the mutual information by the arithmetic mean of the two entropies and
  ARI is Hubert & Arabie's adjusted Rand index, both with scikit-learn's conventions
  (`normalized_mutual_info_score`, `adjusted_rand_score`: 1 when the two partitions
  agree on every pair, NMI 0 when either has one group and the other more). Purity is
  the share of items whose cluster's majority label is their own; unlike the other
  two it rewards many small clusters, so it is read next to them.
  """
  assignments = np.asarray(assignments).reshape(-1)
  labels = np.asarray(labels).reshape(-1)
  if len(assignments) != len(labels) or not len(labels):
    raise ValueError(f"clustering_scores needs as many assignments as labels (> 0), got "
                     f"{len(assignments)} and {len(labels)}")
  clusters = np.unique(assignments, return_inverse=True)[1].reshape(-1)
  classes = np.unique(labels, return_inverse=True)[1].reshape(-1)
  table = np.zeros((clusters.max() + 1, classes.max() + 1), np.int64)
  np.add.at(table, (clusters, classes), 1)
  return {"nmi": _normalized_mutual_information(table), "ari": _adjusted_rand_index(table),
          "purity": float(table.max(axis=1).sum() / len(labels))}


def _normalized_mutual_information(table: np.ndarray) -> float:
  """NMI of a (clusters, classes) contingency table, arithmetic-mean normalised."""
  if table.shape == (1, 1):  # neither partition splits the data: they agree
    return 1.0
  p = table / table.sum()
  p_cluster, p_class = p.sum(axis=1), p.sum(axis=0)
  nonzero = p > 0
  mutual = np.sum(p[nonzero] * np.log(p[nonzero] / np.outer(p_cluster, p_class)[nonzero]))
  if mutual <= 0:  # round-off around independence, or one side with a single group
    return 0.0
  return float(mutual / ((_entropy(p_cluster) + _entropy(p_class)) / 2))


def _entropy(probs: np.ndarray) -> float:
  """Entropy in nats of the probabilities of groups that have members (all > 0)."""
  return float(-np.sum(probs * np.log(probs)))


def _adjusted_rand_index(table: np.ndarray) -> float:
  """ARI of a (clusters, classes) contingency table, from pair counts in Python
  integers: their products overflow int64 from ~80k items."""
  together_both = _pairs(table)
  together_cluster = _pairs(table.sum(axis=1)) - together_both  # split by the labels
  together_class = _pairs(table.sum(axis=0)) - together_both  # split by the clusters
  apart_both = _pairs(table.sum()) - together_both - together_cluster - together_class
  if together_cluster == 0 and together_class == 0:
    return 1.0
  return 2.0 * (together_both * apart_both - together_class * together_cluster) / (
      (together_both + together_class) * (together_class + apart_both)
      + (together_both + together_cluster) * (together_cluster + apart_both))


def _pairs(counts) -> int:
  """Unordered pairs within groups of these sizes, as a Python int."""
  return sum(int(c) * (int(c) - 1) // 2 for c in np.reshape(counts, -1))


def extract_features(extractor: FeatureExtractor, images, batch_size: int = 256) -> np.ndarray:
  """Runs `extractor` over (N, H, W, C) images in batches, as one (N, D) float32 array.

  The last batch is padded to the common batch size, so a jitted extractor
  compiles once.
  """
  images = np.asarray(images, np.float32)
  if images.ndim != 4 or len(images) == 0:
    raise ValueError(f"extract_features needs (N > 0, H, W, C) images, got {images.shape}")
  batch = min(batch_size, len(images))
  out = []
  for start in range(0, len(images), batch):
    chunk = images[start:start + batch]
    pad = batch - len(chunk)
    if pad:
      chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
    out.append(np.asarray(extractor(chunk), np.float32)[:batch - pad])
  return np.concatenate(out)


def domain_feature_extractor(params, num_classes: int) -> FeatureExtractor:
  """Penultimate (128-d) features of a trained `classifier.DomainClassifier`.

  An offline stand-in for Inception on small domains (digits): trained by the
  project on the target domain, so its FID/KID are only comparable within it.
  """
  model = classifier.DomainClassifier(num_classes)
  apply = jax.jit(lambda p, x: model.apply({"params": p}, x, return_features=True)[1])
  return lambda images: np.asarray(apply(params, jnp.asarray(images, jnp.float32)))

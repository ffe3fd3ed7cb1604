"""Spherical k-means over encoder representations: BalaGAN's modalities (Section 3.1).

The contrastive encoder makes images of one style have a large cosine similarity, so
"spherical k-means allows for clustering images by their styles" (Section 3.1). The
authors run faiss' `Kmeans(spherical=True)` (25 iterations, one run, seed 1234) on the
source domain only and keep the target domain as one extra cluster (Appendix A.1).
This is a jit-compiled JAX version: points and centroids live on the unit sphere and
a point belongs to the centroid of largest cosine similarity.
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax

from i2i_jax.errors import ConfigError


def choose_k(num_source: int, num_target: int) -> int:
  """The smallest k with |B| >= |A| / k, i.e. ceil(|A| / |B|) (Section 3.1).

  With that k the source modalities are on average no larger than the target domain,
  so the k + 1 classes are "relatively balanced". It is a lower bound: Section 4.2
  finds FID keeps improving for larger k (the authors use k = 40 for 10,000 dogs and
  1,000 wolves, where the rule gives 10).
  """
  if num_source < 1 or num_target < 1:
    raise ConfigError(f"domain sizes must be positive, got |A|={num_source}, |B|={num_target}")
  return -(-num_source // num_target)


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """Projects rows onto the unit sphere (zero rows stay zero)."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def assign(embeddings: jax.Array, centroids: jax.Array) -> jax.Array:
  """Index of the centroid with the largest cosine similarity to each embedding: (N,)."""
  x = l2_normalize(embeddings.astype(jnp.float32))
  sims = x @ l2_normalize(centroids.astype(jnp.float32)).T
  return jnp.argmax(sims, axis=-1)


@functools.partial(jax.jit, static_argnames=("k", "num_iters", "num_restarts"))
def spherical_kmeans(key: jax.Array, embeddings: jax.Array, k: int, *, num_iters: int = 25,
                     num_restarts: int = 1) -> tuple[jax.Array, jax.Array]:
  """Clusters L2-normalised embeddings into k groups by cosine similarity.

  Each restart seeds with k-means++ (distances on the sphere, 1 - cos, proportional to
  squared Euclidean), then runs `num_iters` Lloyd steps: assign to the most similar
  centroid, set each centroid to the normalised mean of its points. A cluster left
  empty is re-seeded with one of the points farthest from their own centroid (a
  distinct point per empty cluster). The restart with the largest total similarity
  wins. Defaults follow faiss (25 iterations, 1 run).

  Args:
    key: PRNG key.
    embeddings: (N, d); normalised here.
    k: number of clusters, 1 <= k <= N.
    num_iters: Lloyd iterations per restart.
    num_restarts: independent seedings; the best objective is kept.

  Returns:
    centroids (k, d) on the unit sphere and assignments (N,) in [0, k).
  """
  centroids, assignments, objective = all_restarts(key, embeddings, k, num_iters=num_iters,
                                                  num_restarts=num_restarts)
  best = jnp.argmax(objective)
  return centroids[best], assignments[best]


@functools.partial(jax.jit, static_argnames=("k", "num_iters", "num_restarts"))
def all_restarts(key: jax.Array, embeddings: jax.Array, k: int, *, num_iters: int,
                 num_restarts: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Every restart of `spherical_kmeans`: centroids (R, k, d), assignments (R, N) and
  the objective, the total cosine similarity of points to their centroids (R,)."""
  n = embeddings.shape[0]
  if not 1 <= k <= n:
    raise ConfigError(f"k must be in [1, {n}] for {n} embeddings, got {k}")
  if num_iters < 1 or num_restarts < 1:
    raise ConfigError(
        f"num_iters and num_restarts must be positive, got {num_iters}, {num_restarts}")
  x = l2_normalize(embeddings.astype(jnp.float32))

  def run(run_key):
    seeds = _kmeans_pp(run_key, x, k)
    centroids = lax.fori_loop(0, num_iters, lambda _, c: _lloyd_step(x, c), seeds)
    sims = x @ centroids.T
    return centroids, jnp.argmax(sims, axis=-1), jnp.sum(jnp.max(sims, axis=-1))

  return jax.vmap(run)(jax.random.split(key, num_restarts))


def _kmeans_pp(key: jax.Array, x: jax.Array, k: int) -> jax.Array:
  """k-means++ seeding (Arthur & Vassilvitskii, 2007) with the cosine distance 1 - cos."""
  first_key, key = jax.random.split(key)
  first = x[jax.random.randint(first_key, (), 0, x.shape[0])]
  centroids = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(first)
  min_dist = jnp.maximum(1.0 - x @ first, 0.0)

  def body(i, carry):
    centroids, min_dist, key = carry
    key, sub = jax.random.split(key)
    # The epsilon keeps the draw defined (uniform) when every point is already a centroid.
    chosen = x[jax.random.categorical(sub, jnp.log(min_dist + 1e-12))]
    min_dist = jnp.minimum(min_dist, jnp.maximum(1.0 - x @ chosen, 0.0))
    return centroids.at[i].set(chosen), min_dist, key

  centroids, _, _ = lax.fori_loop(1, k, body, (centroids, min_dist, key))
  return centroids


def _lloyd_step(x: jax.Array, centroids: jax.Array) -> jax.Array:
  """One assignment + update step; empty clusters take the worst-fit points."""
  k = centroids.shape[0]
  sims = x @ centroids.T
  onehot = jax.nn.one_hot(jnp.argmax(sims, axis=-1), k, dtype=x.dtype)
  counts = onehot.sum(axis=0)
  updated = l2_normalize(onehot.T @ x)
  empty = counts == 0
  farthest_first = jnp.argsort(jnp.max(sims, axis=-1))
  rank = jnp.clip(jnp.cumsum(empty) - 1, 0, x.shape[0] - 1)
  return jnp.where(empty[:, None], x[farthest_first[rank]], updated)

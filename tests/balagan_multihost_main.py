"""`python -m balagan_jax.main`, with k-means made to differ by process.

Hosts can cluster differently (a last-bit difference in one similarity changes a
label); every host must still train on process 0's modalities.
"""

import runpy

import jax

from balagan_jax import modalities

_cluster = modalities._cluster


def _cluster_by_process(config, embeddings, k, salt):
  return _cluster(config, embeddings, k, salt + 100 * jax.process_index())


if __name__ == "__main__":
  modalities._cluster = _cluster_by_process
  runpy.run_module("balagan_jax.main", run_name="__main__", alter_sys=True)

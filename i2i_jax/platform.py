"""Process set-up shared by every entrypoint: multi-host init and compile cache."""

import os

import jax
from absl import logging


def initialize() -> None:
  """Joins a multi-host job when launched as one, and enables the compile cache.

  `jax.distributed.initialize()` auto-detects TPU pods and SLURM/GCP settings; on a
  single machine there is nothing to join. `I2I_JAX_CACHE_DIR` (default
  ~/.cache/i2i_jax/xla) keeps compiled steps across runs, so a resume starts fast.
  """
  if _launched_as_multi_host():
    jax.distributed.initialize()
  cache_dir = os.environ.get("I2I_JAX_CACHE_DIR",
                             os.path.join(os.path.expanduser("~"), ".cache", "i2i_jax", "xla"))
  if cache_dir:
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  logging.info("JAX process %d/%d, local devices: %s", jax.process_index(), jax.process_count(),
               jax.local_devices())


def _launched_as_multi_host() -> bool:
  """True on TPU pod slices / multi-host GPU jobs (their launchers set these)."""
  keys = ("JAX_COORDINATOR_ADDRESS", "TPU_WORKER_HOSTNAMES", "SLURM_NTASKS",
          "MEGASCALE_COORDINATOR_ADDRESS", "CLOUD_TPU_TASK_ID")
  hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
  return any(os.environ.get(k) for k in keys if k != "TPU_WORKER_HOSTNAMES") or "," in hosts

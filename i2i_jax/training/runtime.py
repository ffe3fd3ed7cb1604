"""Process set-up shared by every entrypoint: multi-host init and compile cache."""

import glob
import os

import jax
from absl import logging


def initialize() -> None:
  """Joins a multi-host job when launched as one, and enables the compile cache.

  `jax.distributed.initialize()` auto-detects TPU pod slices (from the TPU VM's
  metadata) and SLURM/GCP settings; on a single machine there is nothing to join.
  `I2I_JAX_DISTRIBUTED=1|0` forces the choice. `I2I_JAX_CACHE_DIR` (default
  ~/.cache/i2i_jax/xla) keeps compiled steps across runs, so a resume starts fast.
  """
  setting = os.environ.get("I2I_JAX_DISTRIBUTED", "auto")
  if setting == "1" or (setting == "auto" and _launched_as_multi_host()):
    jax.distributed.initialize()
  elif setting == "auto" and _on_tpu_vm():
    # Pod slices launched by hand (gcloud ... ssh --worker=all) set no variables; the
    # TPU metadata tells jax the workers. A single-host VM joins a job of one.
    try:
      jax.distributed.initialize()
    except (RuntimeError, ValueError) as e:
      logging.warning("Not joining a multi-host job (%s); running single-host.", e)
  cache_dir = os.environ.get("I2I_JAX_CACHE_DIR",
                             os.path.join(os.path.expanduser("~"), ".cache", "i2i_jax", "xla"))
  if cache_dir:
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  logging.info("JAX process %d/%d, local devices: %s", jax.process_index(), jax.process_count(),
               jax.local_devices())


def _launched_as_multi_host() -> bool:
  """True on multi-host jobs whose launchers set these (GKE, SLURM, tpu_vm.sh)."""
  keys = ("JAX_COORDINATOR_ADDRESS", "TPU_WORKER_HOSTNAMES", "SLURM_NTASKS",
          "MEGASCALE_COORDINATOR_ADDRESS", "CLOUD_TPU_TASK_ID")
  hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
  return any(os.environ.get(k) for k in keys if k != "TPU_WORKER_HOSTNAMES") or "," in hosts


def _on_tpu_vm() -> bool:
  """TPU VMs expose their chips as /dev/accel* (v2-v4) or /dev/vfio/N (v5e and later)."""
  return bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"))

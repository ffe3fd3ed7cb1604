"""Process set-up shared by every entrypoint: multi-host init and compile cache."""

import glob
import os

import jax
from absl import logging

from i2i_jax.errors import ConfigError
from i2i_jax.training import hosts


# A job started by hand (or by a launcher jax does not know) names its coordinator
# (host:port of process 0), process count and this process's id (0..count-1).
EXPLICIT_VARIABLES = ("I2I_JAX_COORDINATOR", "I2I_JAX_NUM_PROCESSES", "I2I_JAX_PROCESS_ID")


def initialize() -> None:
  """Joins a multi-host job when launched as one, and enables the compile cache.

  `I2I_JAX_COORDINATOR`, `I2I_JAX_NUM_PROCESSES` and `I2I_JAX_PROCESS_ID` (all three)
  join any job: jax cannot guess the count and id outside the clusters it knows.
  Without them, `jax.distributed.initialize()` auto-detects TPU pod slices (from the
  TPU VM's metadata) and SLURM/Open MPI settings; on a single machine there is
  nothing to join. `I2I_JAX_DISTRIBUTED=1|0` forces the choice. `I2I_JAX_CACHE_DIR`
  (default ~/.cache/i2i_jax/xla) keeps compiled steps across runs, so a resume
  starts fast.
  """
  setting = os.environ.get("I2I_JAX_DISTRIBUTED", "auto")
  explicit = _explicit_job()
  if setting != "0" and explicit:
    jax.distributed.initialize(**explicit)
  elif setting == "1" or (setting == "auto" and _launched_as_multi_host()):
    try:
      jax.distributed.initialize()
    except ValueError as e:  # e.g. JAX_COORDINATOR_ADDRESS alone, outside SLURM/MPI/TPU
      raise ConfigError(f"cannot join the multi-host job ({e}); outside TPU pods, SLURM and "
                        f"Open MPI set {', '.join(EXPLICIT_VARIABLES)}") from e
  elif setting == "auto" and _on_tpu_vm():
    # Pod slices launched by hand (gcloud ... ssh --worker=all) set no variables; the
    # TPU metadata tells jax the workers. A single-host VM joins a job of one.
    try:
      jax.distributed.initialize()
    except (RuntimeError, ValueError) as e:
      logging.warning("Not joining a multi-host job (%s); running single-host.", e)
  hosts.connect()
  cache_dir = os.environ.get("I2I_JAX_CACHE_DIR",
                             os.path.join(os.path.expanduser("~"), ".cache", "i2i_jax", "xla"))
  if cache_dir:
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  logging.info("JAX process %d/%d, local devices: %s", jax.process_index(), jax.process_count(),
               jax.local_devices())


def _explicit_job() -> dict[str, str | int] | None:
  """`jax.distributed.initialize` arguments from `EXPLICIT_VARIABLES`, or None if unset."""
  values = {name: os.environ.get(name, "") for name in EXPLICIT_VARIABLES}
  if not any(values.values()):
    return None
  missing = [name for name, value in values.items() if not value]
  if missing:
    raise ConfigError(f"{', '.join(missing)} not set: a multi-host job needs all of "
                      f"{', '.join(EXPLICIT_VARIABLES)}")
  coordinator, count, index = values.values()
  try:
    count, index = int(count), int(index)
  except ValueError:
    raise ConfigError(f"I2I_JAX_NUM_PROCESSES ({count!r}) and I2I_JAX_PROCESS_ID ({index!r}) "
                      "must be integers") from None
  if not 0 <= index < count:
    raise ConfigError(f"I2I_JAX_PROCESS_ID={index} is not in [0, I2I_JAX_NUM_PROCESSES={count})")
  return {"coordinator_address": coordinator, "num_processes": count, "process_id": index}


def _launched_as_multi_host() -> bool:
  """True on multi-host jobs whose launchers set these (GKE, SLURM, tpu_vm.sh)."""
  keys = ("JAX_COORDINATOR_ADDRESS", "TPU_WORKER_HOSTNAMES", "SLURM_NTASKS",
          "MEGASCALE_COORDINATOR_ADDRESS", "CLOUD_TPU_TASK_ID")
  workers = os.environ.get("TPU_WORKER_HOSTNAMES", "")
  return any(os.environ.get(k) for k in keys if k != "TPU_WORKER_HOSTNAMES") or "," in workers


def _on_tpu_vm() -> bool:
  """TPU VMs expose their chips as /dev/accel* (v2-v4) or /dev/vfio/N (v5e and later)."""
  return bool(glob.glob("/dev/accel*") or glob.glob("/dev/vfio/[0-9]*"))

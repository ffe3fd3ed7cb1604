"""Starts a command as a JAX job of 1 or 2 processes on this machine (4 CPU devices in
all), the way a user without a cluster manager would: I2I_JAX_COORDINATOR on
127.0.0.1, I2I_JAX_NUM_PROCESSES, I2I_JAX_PROCESS_ID, gloo CPU collectives."""

import os
import socket
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOTAL_DEVICES = 4
_CLEARED = ("I2I_JAX_COORDINATOR", "I2I_JAX_NUM_PROCESSES", "I2I_JAX_PROCESS_ID",
            "I2I_JAX_DISTRIBUTED", "JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS", "XLA_FLAGS")


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _environment(processes: int, index: int, port: int) -> dict[str, str]:
  env = {k: v for k, v in os.environ.items() if k not in _CLEARED}
  env.update(JAX_PLATFORMS="cpu", JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={TOTAL_DEVICES // processes}",
             PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "tests")]))
  if processes > 1:
    env.update(I2I_JAX_COORDINATOR=f"127.0.0.1:{port}", I2I_JAX_NUM_PROCESSES=str(processes),
               I2I_JAX_PROCESS_ID=str(index))
  return env


def run(command: list[str], processes: int, log_dir: str, timeout: float = 600) -> list[str]:
  """Runs `command` as `processes` JAX processes; returns their stdout, in process order.

  A process that fails (or all, after `timeout` seconds) fails the caller with the
  tail of its log; the others are killed rather than left waiting for it.
  """
  port = free_port()
  logs = [os.path.join(log_dir, f"process_{i}_of_{processes}.log") for i in range(processes)]
  running = []
  for i, log in enumerate(logs):
    with open(log, "w") as stderr:
      running.append(subprocess.Popen(command, cwd=ROOT, env=_environment(processes, i, port),
                                      stdout=subprocess.PIPE, stderr=stderr, text=True))
  outputs = []
  try:
    for process, log in zip(running, logs):
      out, _ = process.communicate(timeout=timeout)
      outputs.append(out)
      if process.returncode:
        with open(log) as f:
          raise AssertionError(f"{log} exited with {process.returncode}:\n{f.read()[-4000:]}")
  finally:
    for process in running:
      if process.poll() is None:
        process.kill()
        process.wait()
  return outputs

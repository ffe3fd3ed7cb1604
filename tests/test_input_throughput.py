"""benchmarks/input_throughput.py runs the real training streams of both methods."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_benchmark(*args):
  env = {**os.environ, "PYTHONPATH": ROOT, "JAX_PLATFORMS": "cpu"}
  result = subprocess.run([sys.executable, "benchmarks/input_throughput.py", "--steps=3",
                           "--warmup=1", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


@pytest.mark.parametrize("method,config,extra,read_per_step", [
    # digits_demo: 2 domains x (d = 5 critic steps + 1) x batch 32.
    ("jdbw", "configs/digits_demo.py", [], 384),
    # AFD-sized JPEG folders, generated: content + reference batches of 10.
    ("balagan", "configs/afd_dogs_wolves.py", ["--fake_images=24", "--fake_size=160"], 20),
])
def test_prints_steps_per_second_of_the_real_streams(method, config, extra, read_per_step):
  out = run_benchmark(f"--method={method}", f"--config={config}", *extra)
  assert f"({read_per_step} images read" in out, out
  steps_per_s = float(re.search(r"sustains\s+([\d.]+) steps/s", out).group(1))
  assert steps_per_s > 0

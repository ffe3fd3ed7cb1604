"""Timing of a real jitted training step: compile time, ms/step, memory, FLOP utilisation.

Shared by the per-method scripts in benchmarks/. Results are printed, never asserted.
"""

import time
from typing import Any, Callable

import jax

# Dense bf16 peak FLOP/s of common accelerators, for model-FLOPs utilisation.
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "TPU v4": 275e12,
              "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12, "TPU v6 lite": 918e12}


def device_peak_flops(device) -> float | None:
  kind = getattr(device, "device_kind", "")
  for name, flops in PEAK_FLOPS.items():
    if name.lower() in kind.lower():
      return flops
  return None


def time_step(step_fn: Callable, state: Any, batch: Any, *, steps: int, warmup: int = 2):
  """Compiles `step_fn(state, batch) -> (state, metrics)`, runs warm-up and timed steps.

  Returns a dict of figures. The state is threaded through the steps (as in training)
  and every timed run blocks on its outputs before the clock stops.
  """
  jitted = jax.jit(step_fn, donate_argnums=(0,))
  t0 = time.perf_counter()
  compiled = jitted.lower(state, batch).compile()
  compile_s = time.perf_counter() - t0
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get("flops", 0.0)) if cost else 0.0
  for _ in range(warmup):
    state, metrics = compiled(state, batch)
  jax.block_until_ready((state, metrics))
  t0 = time.perf_counter()
  for _ in range(steps):
    state, metrics = compiled(state, batch)
  jax.block_until_ready((state, metrics))
  step_s = (time.perf_counter() - t0) / steps
  device = jax.devices()[0]
  stats = device.memory_stats() if hasattr(device, "memory_stats") else None
  peak = device_peak_flops(device)
  return {
      "device": f"{device.platform}:{getattr(device, 'device_kind', '')} x{jax.device_count()}",
      "compile_s": compile_s,
      "ms_per_step": 1e3 * step_s,
      "steps_per_s": 1.0 / step_s,
      "flops_per_step": flops,
      "tflops_per_s": flops / step_s / 1e12,
      "mfu": (flops / step_s / peak) if peak else None,
      "peak_memory_gib": (stats or {}).get("peak_bytes_in_use", 0) / 2**30 if stats else None,
  }


def format_results(title: str, figures: dict, images_per_step: int) -> str:
  lines = [f"== {title}"]
  lines.append(f"device            {figures['device']}")
  lines.append(f"compile           {figures['compile_s']:.2f} s")
  lines.append(f"step              {figures['ms_per_step']:.2f} ms  "
               f"({figures['steps_per_s']:.3f} steps/s)")
  lines.append(f"throughput        {images_per_step * figures['steps_per_s']:.1f} images/s")
  lines.append(f"XLA FLOPs/step    {figures['flops_per_step'] / 1e9:.2f} GFLOP "
               f"({figures['tflops_per_s']:.3f} TFLOP/s)")
  if figures["mfu"] is not None:
    lines.append(f"MFU               {100 * figures['mfu']:.1f}% of bf16 peak")
  if figures["peak_memory_gib"] is not None:
    lines.append(f"peak memory       {figures['peak_memory_gib']:.2f} GiB")
  return "\n".join(lines)

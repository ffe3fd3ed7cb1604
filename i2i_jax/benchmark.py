"""Timing of a real jitted training step: compile time, ms/step, memory, FLOP utilisation,
and the ops that take its time in a profile.

Shared by the per-method scripts in benchmarks/. Results are printed, never asserted.
"""

import dataclasses
import glob
import gzip
import json
import os
import re
import time
from typing import Any, Callable

import jax

# Dense bf16 peak FLOP/s, matched against `device_kind` most specific name first.
PEAK_FLOPS = {"H100 PCIe": 756e12, "H100": 989e12, "H200": 989e12, "A100": 312e12,
              "TPU v4": 275e12, "TPU v5 lite": 197e12, "TPU v5e": 197e12, "TPU v5p": 459e12,
              "TPU v6 lite": 918e12}

# Opt-in XLA:GPU flags (`--xla_gpu_flags` in the scripts; XLA_FLAGS is never changed
# otherwise). This jaxlib's XLA parses all of them; whether they help is what the
# benchmark is for. Conv algorithms are already autotuned by default
# (--xla_gpu_autotune_level=4); lowering that level costs conv speed.
GPU_XLA_FLAGS = (
    # Lets the scheduler overlap independent kernels (and any collectives); JAX's GPU
    # performance tips and NVIDIA's JAX containers set it.
    "--xla_gpu_enable_latency_hiding_scheduler=true",
    # Adds loops to the CUDA graphs XLA already builds from fusions and library calls,
    # so JD-BW's scanned critic steps launch as one graph instead of many small kernels.
    "--xla_gpu_enable_command_buffer=+WHILE,+CONDITIONAL",
    # Unrolls while loops by two so one iteration's start overlaps the previous one's end.
    "--xla_gpu_enable_while_loop_double_buffering=true",
)


def use_gpu_xla_flags() -> str:
  """Appends GPU_XLA_FLAGS to XLA_FLAGS; call before the first JAX computation."""
  flags = " ".join([os.environ.get("XLA_FLAGS", ""), *GPU_XLA_FLAGS]).strip()
  os.environ["XLA_FLAGS"] = flags
  return flags


@dataclasses.dataclass
class Workload:
  """One training step as a benchmark runs it: `step_fn(state, batch) -> (state, metrics)`.

  `flops_step_fn`, if given, is the same step without loops: XLA's cost analysis counts
  a while loop's body once (whatever its trip count), so FLOPs of a scanned step come
  from this one's lowering.
  """

  title: str
  step_fn: Callable
  state: Any
  batch: Any
  images_per_step: int
  flops_step_fn: Callable | None = None


def device_peak_flops(device) -> float | None:
  kind = getattr(device, "device_kind", "").lower()
  for name, flops in PEAK_FLOPS.items():
    if name.lower() in kind:
      return flops
  return None


def lowered_flops(lowered) -> float:
  """FLOPs of one call from XLA's cost analysis of the (unoptimised) lowering."""
  cost = lowered.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", 0.0)) if cost else 0.0


def compile_step(workload: Workload):
  """(compiled step, seconds to trace and lower, seconds to compile, FLOPs per step)."""
  jitted = jax.jit(workload.step_fn, donate_argnums=(0,))
  t0 = time.perf_counter()
  lowered = jitted.lower(workload.state, workload.batch)
  t1 = time.perf_counter()
  compiled = lowered.compile()
  t2 = time.perf_counter()
  if workload.flops_step_fn is not None:
    lowered = jax.jit(workload.flops_step_fn).lower(workload.state, workload.batch)
  return compiled, t1 - t0, t2 - t1, lowered_flops(lowered)


def time_step(workload: Workload, *, steps: int, warmup: int = 2) -> dict[str, Any]:
  """Compiles the step, runs warm-up and timed steps; returns a dict of figures.

  The state is threaded through the steps (as in training, its buffers donated), and
  the timed run blocks on its outputs before the clock stops. `dispatch_ms` is the
  host time spent inside the step calls: a step dominated by dispatch would show it
  close to `ms_per_step`.
  """
  compiled, trace_s, compile_s, flops = compile_step(workload)
  # Batches wait on the device in training (the loop dispatches ahead), so here too.
  state, batch = workload.state, jax.device_put(workload.batch)
  for _ in range(warmup):
    state, metrics = compiled(state, batch)
  jax.block_until_ready((state, metrics))
  dispatch_s = 0.0
  t0 = time.perf_counter()
  for _ in range(steps):
    t = time.perf_counter()
    state, metrics = compiled(state, batch)
    dispatch_s += time.perf_counter() - t
  jax.block_until_ready((state, metrics))
  step_s = (time.perf_counter() - t0) / steps
  device = jax.devices()[0]
  stats = device.memory_stats() if hasattr(device, "memory_stats") else None
  memory = compiled.memory_analysis()
  peak = device_peak_flops(device)
  return {
      "device": f"{device.platform}:{getattr(device, 'device_kind', '')} x{jax.device_count()}",
      "trace_s": trace_s,
      "compile_s": compile_s,
      "ms_per_step": 1e3 * step_s,
      "dispatch_ms": 1e3 * dispatch_s / steps,
      "steps_per_s": 1.0 / step_s,
      "images_per_s": workload.images_per_step / step_s,
      "flops_per_step": flops,
      "tflops_per_s": flops / step_s / 1e12,
      "mfu": (flops / step_s / peak) if peak else None,
      "peak_memory_gib": stats["peak_bytes_in_use"] / 2**30
                         if stats and "peak_bytes_in_use" in stats else None,
      # XLA's own account of the executable: arguments + outputs + temporaries.
      "xla_memory_gib": (memory.argument_size_in_bytes + memory.output_size_in_bytes
                         - memory.alias_size_in_bytes + memory.temp_size_in_bytes) / 2**30
                        if memory is not None else None,
  }


def format_results(title: str, figures: dict) -> str:
  na = "n/a"
  lines = [f"== {title}",
           f"device            {figures['device']}",
           f"compile           {figures['compile_s']:.2f} s (+ {figures['trace_s']:.2f} s "
           "trace and lower)",
           f"step              {figures['ms_per_step']:.2f} ms  "
           f"({figures['steps_per_s']:.3f} steps/s; host dispatch "
           f"{figures['dispatch_ms']:.2f} ms of it)",
           f"throughput        {figures['images_per_s']:.1f} images/s",
           f"XLA FLOPs/step    {figures['flops_per_step'] / 1e9:.2f} GFLOP "
           f"({figures['tflops_per_s']:.3f} TFLOP/s)"]
  mfu = figures["mfu"]
  lines.append("MFU               " + (f"{100 * mfu:.1f}% of dense bf16 peak" if mfu is not None
                                       else f"{na} (no peak FLOP/s known for this device)"))
  peak = figures["peak_memory_gib"]
  lines.append("peak memory       " + (f"{peak:.3f} GiB" if peak is not None
                                       else f"{na} (the device reports no memory stats)"))
  xla = figures["xla_memory_gib"]
  lines.append("XLA memory        " + (f"{xla:.3f} GiB (arguments + outputs + temporaries)"
                                       if xla is not None else na))
  return "\n".join(lines)


# ---------------------------------------------------------------------- profiles
@dataclasses.dataclass
class OpTime:
  name: str
  calls: int
  self_us: float


def op_events(trace: dict) -> list[dict]:
  """The trace's events that are XLA ops, each named by its HLO instruction.

  XLA:CPU tags each HLO instruction the thunk executor runs (on its worker threads)
  with args["hlo_op"]. Accelerator traces have an "XLA Ops" line per /device:
  process instead, whose events are named by instruction.
  """
  events = [e for e in trace["traceEvents"] if e.get("ph") == "X"]
  tagged = [dict(e, name=e["args"]["hlo_op"]) for e in events if "hlo_op" in e.get("args", {})]
  if tagged:
    return tagged
  processes, threads = {}, {}
  for event in trace["traceEvents"]:
    if event.get("ph") == "M" and event.get("name") == "process_name":
      processes[event["pid"]] = event["args"]["name"]
    elif event.get("ph") == "M" and event.get("name") == "thread_name":
      threads[(event["pid"], event["tid"])] = event["args"]["name"]
  devices = {pid for pid, name in processes.items() if name.startswith("/device:")}
  lines = {key for key, name in threads.items() if key[0] in devices and name == "XLA Ops"}
  return [e for e in events if (e["pid"], e["tid"]) in lines]


def op_self_times(trace: dict) -> list[OpTime]:
  """Per op: calls and self time (its duration minus that of ops nested in it on the
  same thread, e.g. a while loop's body), longest first."""
  threads: dict[tuple[int, int], list[dict]] = {}
  for event in op_events(trace):
    threads.setdefault((event["pid"], event["tid"]), []).append(event)
  calls: dict[str, int] = {}
  self_us: dict[str, float] = {}
  for events in threads.values():
    events.sort(key=lambda e: (e["ts"], -e.get("dur", 0)))
    stack: list[dict] = []  # the ops enclosing the current one
    for event in events:
      start, duration = event["ts"], event.get("dur", 0)
      while stack and stack[-1]["ts"] + stack[-1].get("dur", 0) <= start:
        stack.pop()
      if stack:
        self_us[stack[-1]["name"]] -= duration
      name = event["name"]
      calls[name] = calls.get(name, 0) + 1
      self_us[name] = self_us.get(name, 0.0) + duration
      stack.append(event)
  return sorted((OpTime(n, calls[n], self_us[n]) for n in calls), key=lambda o: -o.self_us)


def hlo_op_names(hlo_text: str) -> dict[str, str]:
  """HLO instruction name -> the JAX operation it came from (its metadata op_name)."""
  names = {}
  for match in re.finditer(r'^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=.*?metadata=\{op_name="([^"]*)"',
                           hlo_text, re.MULTILINE):
    names.setdefault(match.group(1), match.group(2))
  return names


def group_by_operation(ops: list[OpTime], sources: dict[str, str]) -> list[OpTime]:
  """Op times summed per JAX operation (conv_general_dilated, dot_general, ...): the
  last part of each instruction's source, or its name without the numeric suffix."""
  groups: dict[str, OpTime] = {}
  for op in ops:
    source = sources.get(op.name)
    key = source.rsplit("/", 1)[-1] if source else re.sub(r"\.\d+$", "", op.name)
    group = groups.setdefault(key, OpTime(key, 0, 0.0))
    group.calls += op.calls
    group.self_us += op.self_us
  return sorted(groups.values(), key=lambda o: -o.self_us)


def format_top_ops(ops: list[OpTime], *, title: str, steps: int, step_ms: float, top: int,
                   sources: dict[str, str] | None = None) -> str:
  """A table of the `top` ops: self ms per step, % of the step's wall time, calls."""
  sources = sources or {}
  busy_ms = sum(op.self_us for op in ops) / 1e3 / steps
  lines = [f"== top {min(top, len(ops))} of {len(ops)} {title} (step {step_ms:.2f} ms wall; "
           f"ops {busy_ms:.2f} ms, summed over threads)",
           f"{'ms/step':>9} {'% step':>7} {'calls':>6}  name  [source]"]
  for op in ops[:top]:
    ms = op.self_us / 1e3 / steps
    source = sources.get(op.name, "")
    lines.append(f"{ms:9.3f} {100 * ms / step_ms:6.1f}% {op.calls / steps:6.1f}  {op.name}"
                 + (f"  [...{source[-80:]}]" if len(source) > 80 else
                    f"  [{source}]" if source else ""))
  return "\n".join(lines)


def load_trace(logdir: str) -> dict:
  """The newest perfetto_trace.json.gz that jax.profiler.trace wrote under `logdir`."""
  paths = glob.glob(os.path.join(logdir, "plugins", "profile", "*", "perfetto_trace.json.gz"))
  if not paths:
    raise FileNotFoundError(f"no perfetto_trace.json.gz under {logdir}/plugins/profile")
  with gzip.open(max(paths, key=os.path.getmtime)) as f:
    return json.load(f)

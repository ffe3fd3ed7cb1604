"""The ops that take a training step's time: a profile of the real jitted step.

Runs a few steps of the step the throughput scripts time (synthetic batches on the
device, after compilation and warm-up) under `jax.profiler.trace`, then reads the
Perfetto trace it writes (no TensorFlow or xprof needed) and prints the ops with the
most self time per step, each with the JAX operation it came from:

  python benchmarks/profile_step.py --method=jdbw --config=configs/mnist_srmnist.py
  python benchmarks/profile_step.py --method=balagan --config=configs/afd_dogs_wolves.py
  python benchmarks/profile_step.py --method=jdbw --config=configs/digits_demo.py   # CPU-sized

The trace stays in --logdir for ui.perfetto.dev (`perfetto_trace.json.gz`) or
TensorBoard's profile plugin.
"""

import functools
import tempfile
import time

import jax
from absl import app, flags
from ml_collections import config_flags

import workloads
from i2i_jax import benchmark

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "JD-BW or BalaGAN config.")
flags.DEFINE_enum("method", None, ["jdbw", "balagan"], "Whose training step.")
flags.DEFINE_enum("part", "translation", ["translation", "encoder"], "BalaGAN: which step.")
flags.DEFINE_integer("num_classes", 41, "BalaGAN: modalities k + 1.")
flags.DEFINE_integer("steps", 3, "Profiled steps.")
flags.DEFINE_integer("warmup", 1, "Untimed steps after compilation.")
flags.DEFINE_integer("top", 25, "Ops to list.")
flags.DEFINE_string("logdir", None, "Where the trace goes; default a new temporary folder.")
flags.DEFINE_bool("xla_gpu_flags", False, "Add i2i_jax.benchmark.GPU_XLA_FLAGS to XLA_FLAGS.")
flags.mark_flags_as_required(["config", "method"])


def build_workload(config) -> benchmark.Workload:
  if FLAGS.method == "jdbw":
    return workloads.jdbw(config)
  if FLAGS.part == "encoder":
    return workloads.balagan_encoder(config)
  return workloads.balagan_translation(config, FLAGS.num_classes)


def main(argv):
  del argv
  if FLAGS.xla_gpu_flags:
    print("XLA_FLAGS=" + benchmark.use_gpu_xla_flags())
  workload = build_workload(FLAGS.config)
  compiled, _, _, _ = benchmark.compile_step(workload)
  state, batch = workload.state, jax.device_put(workload.batch)
  for _ in range(FLAGS.warmup):
    state, metrics = compiled(state, batch)
  jax.block_until_ready((state, metrics))
  logdir = FLAGS.logdir or tempfile.mkdtemp(prefix="profile_step_")
  with jax.profiler.trace(logdir, create_perfetto_trace=True):
    t0 = time.perf_counter()
    for _ in range(FLAGS.steps):
      state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
    step_ms = 1e3 * (time.perf_counter() - t0) / FLAGS.steps
  ops = benchmark.op_self_times(benchmark.load_trace(logdir))
  sources = benchmark.hlo_op_names(compiled.as_text())
  print(f"== {workload.title}, {jax.devices()[0].platform}; trace in {logdir}")
  table = functools.partial(benchmark.format_top_ops, steps=FLAGS.steps, step_ms=step_ms,
                            top=FLAGS.top)
  print(table(benchmark.group_by_operation(ops, sources), title="JAX operations by self time"))
  print(table(ops, title="HLO instructions by self time", sources=sources))

if __name__ == "__main__":
  app.run(main)

"""JD-BW training throughput on whatever device is present.

Times the real jitted train step (one generator step with its d critic steps, one
call) on synthetic batches already on the device, after compilation and warm-up:

  python benchmarks/jdbw_throughput.py --config=configs/mnist_srmnist.py        # 32x32, B=128, d=5
  python benchmarks/jdbw_throughput.py --config=configs/edges_shoesbags.py      # 128x128, B=6, d=2
  python benchmarks/jdbw_throughput.py --config=configs/digits_demo.py --steps=3   # CPU-sized

`--config.compute_dtype=float32|bfloat16` overrides "auto" (bf16 on GPU/TPU),
`--config.critic_loop=unrolled` compares the traced-in-sequence critic steps with the
scan, `--xla_gpu_flags` adds i2i_jax.benchmark.GPU_XLA_FLAGS.
Images/s counts the source images of the generator step; the d critic steps consume
d more batches per domain, so data throughput is (d + 1) times higher.
"""

import json

from absl import app, flags
from ml_collections import config_flags

import workloads
from i2i_jax import benchmark

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/mnist_srmnist.py", "JD-BW config.")
flags.DEFINE_integer("steps", 10, "Timed generator steps.")
flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.")
flags.DEFINE_bool("xla_gpu_flags", False, "Add i2i_jax.benchmark.GPU_XLA_FLAGS to XLA_FLAGS.")
flags.DEFINE_string("output", None, "Also write the figures here, as JSON.")


def main(argv):
  del argv
  if FLAGS.xla_gpu_flags:
    print("XLA_FLAGS=" + benchmark.use_gpu_xla_flags())
  workload = workloads.jdbw(FLAGS.config)
  figures = benchmark.time_step(workload, steps=FLAGS.steps, warmup=FLAGS.warmup)
  print(benchmark.format_results(workload.title, figures))
  if FLAGS.output:
    with open(FLAGS.output, "w") as f:
      json.dump({"title": workload.title, **figures}, f, indent=1)


if __name__ == "__main__":
  app.run(main)

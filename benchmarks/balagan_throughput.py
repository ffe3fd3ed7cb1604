"""BalaGAN training throughput on whatever device is present.

Times the real jitted steps on synthetic batches already on the device, after
compilation and warm-up:

  python benchmarks/balagan_throughput.py --config=configs/afd_dogs_wolves.py            # translation, 128x128, B=10
  python benchmarks/balagan_throughput.py --config=configs/afd_dogs_wolves.py --part=encoder  # SimCLR step, B=256
  python benchmarks/balagan_throughput.py --config=configs/balagan_digits_demo.py --steps=3    # CPU-sized

The translation step is one D update, one G update and the EMA (the authors' order);
images/s counts the batch's source images per step. `--config.compute_dtype=...`
overrides "auto" (bf16 on GPU/TPU); `--xla_gpu_flags` adds
i2i_jax.benchmark.GPU_XLA_FLAGS.
"""

import json

from absl import app, flags
from ml_collections import config_flags

import workloads
from i2i_jax import benchmark

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", "configs/afd_dogs_wolves.py", "BalaGAN config.")
flags.DEFINE_enum("part", "translation", ["translation", "encoder"], "Which step to time.")
flags.DEFINE_integer("num_classes", 41, "Modalities k + 1 (AFD: 40 + 1).")
flags.DEFINE_integer("steps", 10, "Timed steps.")
flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.")
flags.DEFINE_bool("xla_gpu_flags", False, "Add i2i_jax.benchmark.GPU_XLA_FLAGS to XLA_FLAGS.")
flags.DEFINE_string("output", None, "Also write the figures here, as JSON.")


def main(argv):
  del argv
  if FLAGS.xla_gpu_flags:
    print("XLA_FLAGS=" + benchmark.use_gpu_xla_flags())
  if FLAGS.part == "translation":
    workload = workloads.balagan_translation(FLAGS.config, FLAGS.num_classes)
  else:
    workload = workloads.balagan_encoder(FLAGS.config)
  figures = benchmark.time_step(workload, steps=FLAGS.steps, warmup=FLAGS.warmup)
  print(benchmark.format_results(workload.title, figures))
  if FLAGS.output:
    with open(FLAGS.output, "w") as f:
      json.dump({"title": workload.title, **figures}, f, indent=1)


if __name__ == "__main__":
  app.run(main)

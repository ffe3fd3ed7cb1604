"""BalaGAN's Table 2 trend in miniature: FID as the poor target domain shrinks.

Table 2 of the paper gives the FID (lower is better) of dog -> wolf and woman -> man
translations trained with |B| = 1000, 500, 250, 125 target images: every method's
FID rises as |B| shrinks, BalaGAN's least ("more stable as the size of the target
domain decreases", Section 4.1; AFD: 60.9 -> 157.7, CycleGAN 77.8 -> 202.6). The
baselines there are other methods; here it is BalaGAN with k = 1, which Section 4.2
calls "the common setting of image-to-image translation" (one source modality, so
the translator learns A <-> B only). BalaGAN proper takes k by its rule, the
smallest k with |B| >= |A| / k (Section 3.1).

Data (configs/balagan_digits_demo.py): A = 2,250 grey digits, B = the first |B| of
other digits painted amber on navy; the B sets are nested. FID compares A -> B
translations of held-out grey digits (each with a random reference from the run's
B) with held-out painted digits; no run trains on either held-out set, so every
row shares one reference set. The features are one 20-class digit x style
classifier (A's digits grey, and painted as B is) trained once per benchmark, so
all FIDs of a table share one feature space; with --inception_weights Inception
FIDs are added. Absolute values are not comparable with the paper's. Every run is
repeated per seed; the table gives the FIDs and their rise from the largest |B|
(taken per seed) as mean ± std over the seeds, which share the feature classifier
and the held-out images.

  python benchmarks/quality/balagan_target_size.py                # the backend's preset
  python benchmarks/quality/balagan_target_size.py --preset=cpu   # two CPU cores, <= 1 h
  python benchmarks/quality/balagan_target_size.py --preset=gpu   # one GPU (see GPU_*)
  python benchmarks/quality/balagan_target_size.py --quick        # plumbing, a few minutes

Writes WORKDIR/seed<s>/B<size>_<variant>/ (a training workdir each), WORKDIR/features/
and WORKDIR/results.json.
"""

import copy
import functools
import os
import time

import numpy as np
from absl import app, flags

import common
from balagan_jax import evaluate, modalities, train, translate
from i2i_jax.data import domains, pipeline, sources
from i2i_jax.evaluation import evaluators, metrics
from i2i_jax.training import runtime

FLAGS = flags.FLAGS
SIZES = (1000, 500, 250, 125)  # Table 2's |B|
CPU_SIZES = (1000, 125)  # Table 2's largest and smallest |B|
VARIANTS = ("balagan", "k1")
# The embedded digits in their class-interleaved order: A is all[0:2250] (the demo's
# "train[:50%]"), B the first |B| of all[2250:4500] ("train[50%:]" with max_records),
# so every B lies in all[2250:3250] and all[3250:5000] is never trained on.
MAX_TARGET_SIZE = 1000
HELD_OUT_SOURCE_SPLIT = "all[3250:4125]"  # 875 grey digits to translate
HELD_OUT_TARGET_SPLIT = "all[4125:]"  # 875 painted digits: FID's real set
FEATURES_FILE = "digit_style_classifier.msgpack"
SHARED_SEED = 0  # the feature classifier and the held-out images: one for every seed

# CPU preset: the demo's own networks, sizes and encoder recipe, a shorter translation
# schedule; meant to run the table's ends (2 sizes x 2 variants x 3 seeds: 12 runs,
# 6 encoders) on two CPU cores within an hour.
CPU_ENCODER_STEPS = 600
CPU_ENCODER_BATCH = 64
CPU_STEPS = 300
CPU_BATCH = 8
CPU_FEATURE_STEPS = 200
# Quick preset: the demo's networks, shorter, two sizes; checks the plumbing.
QUICK_ENCODER_STEPS = 40
QUICK_STEPS = 100
QUICK_FEATURE_STEPS = 150

# GPU preset: 8 runs (4 sizes x 2 variants) per seed. XLA counts 51 GFLOP per translation step
# at batch 32 and 25 GFLOP per encoder step at batch 256, so the steps are latency-
# rather than FLOP-bound on an H100: at an assumed ~10 ms per translation step a run
# trains in ~30 s; with ~30-60 s compilation per modality count (5 distinct) the
# benchmark should finish in about 8-10 min per seed. An estimate, not a measurement.
GPU_ENCODER_STEPS = 1000
GPU_ENCODER_BATCH = 256
GPU_STEPS = 2500
GPU_BATCH = 32
GPU_FEATURE_STEPS = 2000
GPU_DATA_WORKERS = 2


def define_flags():
  flags.DEFINE_list("sizes", None, f"Target sizes |B| (at most {MAX_TARGET_SIZE}); default "
                    f"{SIZES}, with --preset=cpu or quick {CPU_SIZES}.")
  flags.DEFINE_string("inception_weights", "", "pytorch-fid Inception weights: adds "
                      "Inception FIDs next to the digit-feature ones.")


def build_config(preset: str):
  """The embedded BalaGAN demo, sized by `preset`; run_benchmark sets the seed, the
  target size and the variant per run."""
  config = common.load_config("configs/balagan_digits_demo.py")
  if preset == "cpu":
    config.encoder.num_steps = CPU_ENCODER_STEPS
    config.encoder.batch_size = CPU_ENCODER_BATCH
    config.num_steps = CPU_STEPS
    config.batch_size = CPU_BATCH
    config.eval.classifier_steps = CPU_FEATURE_STEPS  # the FID feature classifier
  elif preset == "quick":
    config.encoder.num_steps = QUICK_ENCODER_STEPS
    config.num_steps = QUICK_STEPS
    config.eval.classifier_steps = QUICK_FEATURE_STEPS
  elif preset == "gpu":
    config.encoder.num_steps = GPU_ENCODER_STEPS
    config.encoder.batch_size = GPU_ENCODER_BATCH
    config.num_steps = GPU_STEPS
    config.batch_size = GPU_BATCH
    config.eval.classifier_steps = GPU_FEATURE_STEPS
    config.data.source.num_workers = GPU_DATA_WORKERS
  else:
    raise ValueError(f"unknown preset {preset!r}; expected one of {common.PRESETS}")
  # A replication computes in float32 on every backend ("auto" would pick bf16 on GPU).
  config.compute_dtype = "float32"
  config.eval_every = 0  # scored here against the shared held-out set
  config.log_every = max(config.num_steps // 50, 1)
  config.sample_every = config.num_steps
  config.checkpoint_every = config.num_steps
  return config


def check_layout(base, sizes) -> None:
  """The held-out digits are disjoint from A and B only for the demo's splits."""
  layout = ("embedded_mnist", "train[:50%]", "train[50%:]")
  for role, domain in (("source", base.data.source), ("target", base.data.target)):
    expected = layout[0], layout[1 if role == "source" else 2]
    if (domain.kind, domain.split) != expected:
      raise ValueError(f"config.data.{role}: kind {domain.kind!r}, split {domain.split!r}; the "
                       f"benchmark's held-out digits assume {expected}")
  if max(sizes) > MAX_TARGET_SIZE:
    raise ValueError(f"target size {max(sizes)} > {MAX_TARGET_SIZE}: B would overlap the "
                     f"held-out digits {HELD_OUT_SOURCE_SPLIT}")


def run_config(base, target_size: int, variant: str, run_dir: str):
  """`base` with |B| = target_size and the variant's modalities."""
  config = copy.deepcopy(base)
  config.data.target.max_records = target_size
  if variant == "k1":
    # One modality holding all of A: what modalities.k_source = 1 gives (k-means with
    # one cluster), without training the encoder that such a clustering ignores.
    path = os.path.join(run_dir, "one_modality.npz")
    os.makedirs(run_dir, exist_ok=True)
    num_source = len(domains.domain_source(config.data.source))
    np.savez(path, source=np.zeros(num_source, np.int32))
    config.modalities.assignment = path
  elif variant != "balagan":
    raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
  return config


def digit_style_batches(base, num_digits: int):
  """A's digits, half grey (label d) and half painted as B (label num_digits + d)."""
  half = base.eval.classifier_batch // 2
  streams = [iter(pipeline.make_domain_dataset(
      common.source_like_domain(base, base.data.source.split, painted), batch_size=half,
      seed=base.seed + 20 + i, shard_index=0, shard_count=1))
             for i, painted in enumerate((False, True))]
  while True:
    grey, painted = (next(s) for s in streams)
    yield {"image": np.concatenate([grey["image"], painted["image"]]),
           "label": np.concatenate([grey["label"], painted["label"] + num_digits])}


def feature_extractor(base, directory: str) -> metrics.FeatureExtractor:
  """ONE digit x style classifier for every run: FIDs of one table must share features."""
  num_digits = int(sources.source_labels(domains.domain_source(base.data.source)).max()) + 1
  shape = (base.data.source.image_size,) * 2 + (base.data.source.channels,)
  os.makedirs(directory, exist_ok=True)
  params = evaluators.cached_classifier(
      os.path.join(directory, FEATURES_FILE),
      functools.partial(digit_style_batches, base, num_digits), 2 * num_digits, shape,
      steps=base.eval.classifier_steps, seed=base.seed)
  return metrics.domain_feature_extractor(params, 2 * num_digits)


def translations(run_dir: str, sources: np.ndarray, seed: int) -> np.ndarray:
  """A -> B of `sources` by the run's EMA generator, each with a random reference of
  the run's own B (all the target data it had)."""
  model, state = translate.load_model(run_dir)
  references = common.every_record(model.config.data.target, seed)["image"]
  pick = np.random.default_rng(seed).integers(0, len(references), len(sources))
  out, = evaluators.in_batches(functools.partial(evaluate.make_sampler(model), state),
                               (sources, references[pick]), model.config.eval.batch_size)
  return out


def run_variant(config, target_size: int, variant: str, workdir: str, sources: np.ndarray,
                real: evaluators.RealFeatures) -> dict:
  """Trains (or resumes) one run in workdir/B<size>_<variant> and scores it: a row of
  results.json's runs."""
  run_dir = os.path.join(workdir, f"B{target_size}_{variant}")
  config = run_config(config, target_size, variant, run_dir)
  start = time.perf_counter()
  train.train_and_evaluate(config, run_dir)
  train_s = time.perf_counter() - start
  mods = modalities.Modalities.load(modalities.assignment_path(run_dir))
  scores = real.score(translations(run_dir, sources, config.seed), "a_to_b")
  return {"seed": config.seed, "target_size": target_size, "variant": variant,
          "k": mods.k_source, "source_sizes": mods.summary()["source_sizes"], **scores,
          "train_s": train_s, "wall_s": time.perf_counter() - start}


def fid_key(space: str) -> str:
  return f"fid_a_to_b_{space}"


def add_rises(runs: list[dict], spaces) -> None:
  """rise_<fid key>: each run's FID minus that of its seed's and variant's largest |B|,
  in place; taken per seed, so the spread over seeds is the rise's own."""
  largest_size = max(run["target_size"] for run in runs)
  largest = {(r["seed"], r["variant"]): r for r in runs if r["target_size"] == largest_size}
  for run in runs:
    for space in spaces:
      key = fid_key(space)
      run[f"rise_{key}"] = run[key] - largest[run["seed"], run["variant"]][key]


def run_benchmark(base, workdir: str, sizes=SIZES, seeds=(0,),
                  inception_weights: str = "") -> dict:
  """Every (size, variant) run on `base` once per seed; the results as results.json
  holds them."""
  check_layout(base, sizes)
  start = time.perf_counter()
  sizes = sorted(sizes, reverse=True)
  shared = copy.deepcopy(base)
  shared.seed = SHARED_SEED
  spaces = evaluators.feature_spaces(
      feature_extractor(shared, os.path.join(workdir, "features")), inception_weights)
  sources = common.every_record(
      common.source_like_domain(shared, HELD_OUT_SOURCE_SPLIT, painted=False),
      SHARED_SEED)["image"]
  real = evaluators.RealFeatures(
      common.every_record(common.source_like_domain(shared, HELD_OUT_TARGET_SPLIT,
                                                    painted=True), SHARED_SEED)["image"],
      spaces, kid_subset_size=base.eval.kid_subset_size, batch_size=base.eval.batch_size)
  # Scale anchors: untranslated sources, and real painted digits from B's range.
  real_b = copy.deepcopy(base.data.target)
  real_b.max_records = MAX_TARGET_SIZE
  anchors = {"untranslated_sources": real.score(sources, "a_to_b"),
             "real_target_images": real.score(
                 pipeline.fixed_batch(real_b, len(sources), seed=SHARED_SEED)["image"],
                 "a_to_b")}
  runs = []
  for seed in seeds:
    config = copy.deepcopy(base)
    config.seed = seed
    runs += [run_variant(config, size, variant, common.seed_dir(workdir, seed), sources, real)
             for size in sizes for variant in VARIANTS]
  add_rises(runs, spaces)
  aggregated = [key for space in sorted(spaces)
                for key in (fid_key(space), f"rise_{fid_key(space)}")]
  return {"benchmark": "balagan_target_size", "workdir": workdir, "seeds": list(seeds),
          "num_source": len(domains.domain_source(base.data.source)),
          "num_fid_samples": len(sources), "batch_size": base.batch_size,
          "num_steps": base.num_steps, "encoder_steps": base.encoder.num_steps,
          "features": sorted(spaces), "anchors": anchors, "runs": runs,
          "aggregates": common.aggregate(runs, ("target_size", "variant", "k"), aggregated),
          "wall_s": time.perf_counter() - start}


def format_results(results: dict) -> str:
  seeds = results["seeds"]
  title = (f"BalaGAN, embedded digits A ({results['num_source']}) -> painted digits B, "
           f"{results['num_steps']} translation steps at batch {results['batch_size']}, "
           f"{results['encoder_steps']} encoder steps; FID of {results['num_fid_samples']} "
           "held-out translations vs held-out painted digits; mean ± std over "
           f"{len(seeds)} seed(s) {','.join(map(str, seeds))}")
  aggregates = {(a["target_size"], a["variant"]): a for a in results["aggregates"]}
  runs = {(r["seed"], r["target_size"], r["variant"]): r for r in results["runs"]}
  sizes = sorted({size for size, _ in aggregates}, reverse=True)
  lines = [f"== {title}"]
  for space in results["features"]:
    key = fid_key(space)
    rise = f"rise_{key}"
    headers = ["|B|", "k (rule)", "FID BalaGAN", "FID k=1", "rise BalaGAN", "rise k=1"]
    table = [[size, aggregates[size, "balagan"]["k"], aggregates[size, "balagan"][key],
              aggregates[size, "k1"][key], aggregates[size, "balagan"][rise],
              aggregates[size, "k1"][rise]] for size in sizes]
    seed_headers = ["seed", "|B|", "FID BalaGAN", "FID k=1", "rise BalaGAN", "rise k=1",
                    "wall s"]
    seed_table = [[seed, size, runs[seed, size, "balagan"][key], runs[seed, size, "k1"][key],
                   runs[seed, size, "balagan"][rise], runs[seed, size, "k1"][rise],
                   round(runs[seed, size, "balagan"]["wall_s"] + runs[seed, size, "k1"]["wall_s"])]
                  for seed in seeds for size in sizes]
    anchors = results["anchors"]
    paired = [f"|B| = {size}: {name} BalaGAN - k=1, paired by seed: " + common.format_paired(
        common.paired_difference([r for r in results["runs"] if r["target_size"] == size],
                                 "variant", "balagan", "k1", metric))
              for size in sizes for name, metric in (("FID", key), ("rise", rise))
              if name == "FID" or size != sizes[0]]
    lines += [f"-- features: {space} (rise: FID minus its value at |B| = {sizes[0]}, per "
              "seed; std: sample std over seeds)", common.format_table(headers, table),
              f"anchors: untranslated sources {anchors['untranslated_sources'][key]:.3f}, "
              f"real painted digits {anchors['real_target_images'][key]:.3f}", *paired,
              f"-- per seed, features: {space}", common.format_table(seed_headers, seed_table)]
  lines.append("paper (Table 2): FID rises as |B| shrinks; BalaGAN's rises least")
  return "\n".join(lines)


def main(argv):
  del argv
  runtime.initialize()
  preset = common.preset_from_flags()
  sizes = tuple(int(s) for s in FLAGS.sizes) if FLAGS.sizes else (
      SIZES if preset == "gpu" else CPU_SIZES)
  workdir = common.workdir_from_flags("balagan")
  results = run_benchmark(build_config(preset), workdir, sizes,
                          common.seeds_from_flags(preset), FLAGS.inception_weights)
  common.report(workdir, results, preset, format_results)


if __name__ == "__main__":
  common.define_flags()
  define_flags()
  app.run(main)

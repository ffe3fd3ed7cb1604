"""JD-BW's central claim in miniature: batch weight re-balances the modes and keeps classes.

MNIST -> SR-MNIST (the paper's first task, Section 4.1) on the embedded digits: the
target half is half zeros, the source uniform. Trains the joint discriminator with
the two-sided batch weight (Algorithm 1) and, as the paper's ablation "joint
discriminator without batch weight" (Section 4.2), with every weight 1; then prints
per scheme:
  * class_match_x_to_y / _y_to_x: the share of translations that the other domain's
    digit classifier puts in the source's class (Section 5.1's "correctly matching
    different digit classes"). One pair of classifiers judges every scheme;
  * the share of each side's batch weight held by each digit class, averaged over the
    last fifth of training (Figure 3 plots its moving average), next to the shares
    that would re-balance the classes (below).

Re-balancing means the weighted class shares of the two sides agree. Any common share
between the two frequencies does; if both sides move by the same factor they meet at
the normalised geometric mean sqrt(p_x p_y) (0.25 for the zeros). Algorithm 1's pair
weights (1 + w) / 2 with w in (0, 1) differ at most by a factor (1 + 2r) / (2 + r) < 2
within a batch (r: the clip ratio), so each side can shift a class's odds by less
than 2 while the zeros' odds differ 9-fold (50% vs 10%): the reachable shares are
printed too. The table's TV gap (half the L1 distance between the two sides' shares)
is 0.4 unweighted.

  python benchmarks/quality/jdbw_batch_weight.py              # GPU-sized (see GPU_STEPS)
  python benchmarks/quality/jdbw_batch_weight.py --quick      # CPU: a few minutes

Writes WORKDIR/<scheme>/ (a training workdir each), WORKDIR/judges/ and
WORKDIR/results.json.
"""

import copy
import functools
import os
import shutil
import time

import numpy as np
from absl import app, flags

import common
from i2i_jax import datasets, evaluation, input_pipeline, platform
from i2i_jax.writers import read_event_scalars
from jdbw_jax import batch_weight, default_config, evaluate, train

FLAGS = flags.FLAGS
SCHEMES = ("two_sided", "none")
JUDGE_FILES = ("classifier_x.msgpack", "classifier_y.msgpack")
TAIL_FRACTION = 0.2  # final shares: the mean over the last fifth of the logged steps

# GPU default: the paper's 32x32 networks (Tables 1-2) and d = 5 (Section 4.4) at
# batch 64 for GPU_STEPS generator steps (the paper: batch 128, 50k steps). XLA counts
# 0.91 TFLOP per generator step (5 critic steps with the gradient penalty), so a
# scheme is ~3.6 PFLOP: about 2-3 min on one H100 at an assumed 20-40 TFLOP/s
# sustained on these small fp32 convolutions, both schemes with classifiers and
# evaluation in about 5-8 min. An estimate from FLOPs, not a measurement.
GPU_STEPS = 4000
GPU_BATCH = 64
# SR-MNIST's rotate/crop runs at ~1.4k records/s per core and a step reads
# (d + 1) x 64 records per domain: grain workers keep a GPU fed.
GPU_DATA_WORKERS = {"source": 4, "target": 8}


def define_flags():
  flags.DEFINE_list("schemes", list(SCHEMES), "Batch-weight schemes to compare: two_sided "
                    "(Algorithm 1), one_sided (Algorithm 2), none (no batch weight).")


def build_config(quick: bool, seed: int):
  """configs/digits_demo.py (embedded MNIST -> SR-MNIST, half zeros), sized."""
  config = common.load_config("configs/digits_demo.py")
  config.seed = seed
  if quick:  # The demo's narrow CPU networks, shorter: checks the plumbing.
    config.batch_size = 16
    config.num_steps = 100
    config.eval.classifier_steps = 100
    config.num_eval = 500
    config.eval_every = 0  # scored once at the end by jdbw_jax.evaluate
  else:
    config.model = default_config.get_config().model
    config.model.noise_dim = 8  # Section 4.3: d = 8 for MNIST-SR
    config.batch_size = GPU_BATCH
    config.num_steps = GPU_STEPS
    config.eval.classifier_steps = 1500
    config.num_eval = 1000
    config.eval_every = GPU_STEPS // 4  # a class-matching curve in TensorBoard
    config.data.source.num_workers = GPU_DATA_WORKERS["source"]
    config.data.target.num_workers = GPU_DATA_WORKERS["target"]
  # Relax the weight clip over the first half, so the last fifth runs at its end value.
  config.batch_weight.clip.relax_steps = max(config.num_steps // 2, 1)
  config.log_every = max(config.num_steps // 100, 1)
  config.sample_every = config.num_steps
  config.checkpoint_every = config.num_steps
  return config


def class_frequencies(config) -> tuple[np.ndarray, np.ndarray]:
  """(p_x, p_y): the source's label frequencies and the target's re-sampled ones."""
  labels = datasets.source_labels(input_pipeline.domain_source(config.data.source))
  p_x = np.bincount(labels, minlength=config.data.num_classes) / len(labels)
  return p_x, np.asarray(config.data.target.class_probs, np.float64)


def rebalancing_targets(config) -> dict:
  """The shares that re-balance the classes, and what Algorithm 1 can reach."""
  p_x, p_y = class_frequencies(config)
  meeting = np.sqrt(p_x * p_y) / np.sum(np.sqrt(p_x * p_y))
  clip = config.batch_weight.clip
  r = float(batch_weight.clip_ratio(config.num_steps, start=clip.start, end=clip.end,
                                    relax_steps=clip.relax_steps))
  # Two-sided pair weights (1 + sigmoid) / 2 with logits clipped to [-log r, log r].
  rho = (1 + 2 * r) / (2 + r) if np.isfinite(r) else 2.0
  skew = int(np.argmax(p_y / p_x))  # the class Y over-represents most (the zeros)
  return {
      "freq_x": p_x.tolist(), "freq_y": p_y.tolist(), "meeting_point": meeting.tolist(),
      "freq_tv_gap": float(0.5 * np.abs(p_x - p_y).sum()),
      "final_clip_ratio": r, "two_sided_max_weight_ratio": rho, "skew_class": skew,
      # Best case: the skew class weighted rho times the others in X, 1/rho in Y.
      "two_sided_reachable": {
          "share_x": float(p_x[skew] * rho / (p_x[skew] * rho + 1 - p_x[skew])),
          "share_y": float(p_y[skew] / (p_y[skew] + (1 - p_y[skew]) * rho))},
  }


def train_judges(config, directory: str) -> None:
  """The digit classifiers of both domains, trained once and copied into every run:
  class matching and the domain-feature FID then use one judge for all schemes."""
  shape = (config.data.source.image_size,) * 2 + (config.data.source.channels,)
  os.makedirs(directory, exist_ok=True)
  for name, domain in zip(("x", "y"), (config.data.source, config.data.target)):
    domain = copy.deepcopy(domain)
    domain.num_workers = 0  # a few hundred small batches
    evaluation.cached_classifier(
        os.path.join(directory, f"classifier_{name}.msgpack"),
        functools.partial(train.classifier_batches, config, domain), config.data.num_classes,
        shape, steps=config.eval.classifier_steps, seed=config.seed)


def tail_means(scalars: dict, prefix: str, num_classes: int, num_steps: int) -> list[float]:
  """Per-class means of the `prefix/<c>` scalars logged in the last TAIL_FRACTION."""
  start = (1 - TAIL_FRACTION) * num_steps
  means = []
  for c in range(num_classes):
    values = [v for step, v in scalars[f"{prefix}/{c}"] if step > start]
    means.append(float(np.mean(values)))
  return means


def relative_weights(shares, freqs) -> list[float | None]:
  return [s / f if f > 0 else None for s, f in zip(shares, freqs)]


def run_scheme(config, scheme: str, workdir: str, judges_dir: str) -> dict:
  """Trains (or resumes) one scheme in workdir/<scheme> and scores its final state."""
  config = copy.deepcopy(config)
  config.batch_weight.scheme = scheme
  run_dir = os.path.join(workdir, scheme)
  os.makedirs(run_dir, exist_ok=True)
  for name in JUDGE_FILES:
    shutil.copyfile(os.path.join(judges_dir, name), os.path.join(run_dir, name))
  start = time.perf_counter()
  train.train_and_evaluate(config, run_dir)
  train_s = time.perf_counter() - start
  scores = evaluate.evaluate_run(run_dir, inception_weights="")["metrics"]
  scalars = read_event_scalars(os.path.join(run_dir, "tensorboard"))
  n, steps = config.data.num_classes, config.num_steps
  shares = {side: tail_means(scalars, f"class_share_{side}", n, steps) for side in "xy"}
  freqs = {side: tail_means(scalars, f"class_freq_{side}", n, steps) for side in "xy"}
  return {
      "class_match_x_to_y": scores["class_match_x_to_y"],
      "class_match_y_to_x": scores["class_match_y_to_x"],
      "fid_x_to_y_domain": scores["fid_x_to_y_domain"],
      "fid_y_to_x_domain": scores["fid_y_to_x_domain"],
      "classifier_acc_x": scores["classifier_acc_x"],
      "classifier_acc_y": scores["classifier_acc_y"],
      "share_x": shares["x"], "share_y": shares["y"],
      "batch_freq_x": freqs["x"], "batch_freq_y": freqs["y"],
      # A class's mean weight over the batch's mean weight: share / frequency.
      "relative_weight_x": relative_weights(shares["x"], freqs["x"]),
      "relative_weight_y": relative_weights(shares["y"], freqs["y"]),
      "share_tv_gap": float(0.5 * np.abs(np.subtract(shares["x"], shares["y"])).sum()),
      "train_s": train_s, "wall_s": time.perf_counter() - start,
  }


def run_benchmark(config, workdir: str, schemes=SCHEMES) -> dict:
  """Every scheme on `config`; the results as results.json holds them."""
  start = time.perf_counter()
  judges_dir = os.path.join(workdir, "judges")
  train_judges(config, judges_dir)
  runs = {scheme: run_scheme(config, scheme, workdir, judges_dir) for scheme in schemes}
  return {
      "benchmark": "jdbw_batch_weight", "workdir": workdir, "seed": config.seed,
      "batch_size": config.batch_size, "d_steps": config.d_steps,
      "num_steps": config.num_steps, "num_eval": config.num_eval,
      "expected": rebalancing_targets(config), "runs": runs,
      "wall_s": time.perf_counter() - start,
  }


def format_results(results: dict) -> str:
  expected, runs = results["expected"], results["runs"]
  c = expected["skew_class"]
  title = (f"JD-BW, embedded MNIST -> SR-MNIST (class {c}: {expected['freq_x'][c]:.0%} of X, "
           f"{expected['freq_y'][c]:.0%} of Y), batch {results['batch_size']}, "
           f"d={results['d_steps']}, {results['num_steps']} generator steps, "
           f"{results['num_eval']} samples per direction")
  headers = ["scheme", "match x->y", "match y->x", f"share{c} x", f"share{c} y", "TV gap",
             f"rel w{c} x", f"rel w{c} y", "FID x->y", "FID y->x", "wall s"]
  rows = [[scheme, r["class_match_x_to_y"], r["class_match_y_to_x"], r["share_x"][c],
           r["share_y"][c], r["share_tv_gap"], r["relative_weight_x"][c],
           r["relative_weight_y"][c], r["fid_x_to_y_domain"], r["fid_y_to_x_domain"],
           round(r["wall_s"])] for scheme, r in runs.items()]
  reach = expected["two_sided_reachable"]
  judged = next(iter(runs.values()))  # every scheme has the same judges
  notes = [
      f"unweighted: share{c} x {expected['freq_x'][c]:.3f}, y {expected['freq_y'][c]:.3f}, "
      f"TV gap {expected['freq_tv_gap']:.3f}; re-balanced (both sides moved alike): "
      f"share{c} = {expected['meeting_point'][c]:.3f} on both sides, TV gap 0",
      f"two_sided at the final clip ratio {expected['final_clip_ratio']:.1f}: weights differ "
      f"at most {expected['two_sided_max_weight_ratio']:.2f}x, so share{c} x <= "
      f"{reach['share_x']:.3f} and share{c} y >= {reach['share_y']:.3f}",
      f"rel w{c}: class {c}'s mean weight over the batch's (1 = not re-weighted); "
      "shares: mean over the last fifth of training; match: digit classifiers of the other "
      f"domain (accuracy on real images: x {judged['classifier_acc_x']:.3f}, "
      f"y {judged['classifier_acc_y']:.3f}); FID in those classifiers' 128-d features",
  ]
  per_class_headers = ["class", "freq x", "freq y", "meeting"] + [
      f"{scheme} {side}" for scheme in runs for side in ("x", "y")]
  per_class = [[k, expected["freq_x"][k], expected["freq_y"][k], expected["meeting_point"][k]]
               + [runs[s][f"share_{side}"][k] for s in runs for side in ("x", "y")]
               for k in range(len(expected["freq_x"]))]
  return "\n".join([f"== {title}", common.format_table(headers, rows), *notes, "",
                    "== final per-class weight shares (Figure 3)",
                    common.format_table(per_class_headers, per_class)])


def main(argv):
  del argv
  platform.initialize()
  common.warn_if_cpu_without_quick(FLAGS.quick)
  unknown = set(FLAGS.schemes) - set(batch_weight.SCHEMES)
  if unknown:
    raise app.UsageError(f"unknown --schemes {sorted(unknown)}; valid: {batch_weight.SCHEMES}")
  workdir = common.workdir_from_flags("jdbw")
  config = build_config(FLAGS.quick, FLAGS.seed)
  results = run_benchmark(config, workdir, tuple(FLAGS.schemes))
  common.report(workdir, results, FLAGS.quick, format_results)


if __name__ == "__main__":
  common.define_flags()
  define_flags()
  app.run(main)

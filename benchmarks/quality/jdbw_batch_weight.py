"""JD-BW's central claim in miniature: batch weight re-balances the modes and keeps classes.

MNIST -> SR-MNIST (the paper's first task, Section 4.1) on the embedded digits: the
target half is half zeros, the source uniform. Trains the joint discriminator with
the two-sided batch weight (Algorithm 1) and, as the paper's ablation "joint
discriminator without batch weight" (Section 4.2), with every weight 1, once per seed;
then prints per scheme, as mean ± std over the seeds:
  * class_match_x_to_y / _y_to_x: the share of translations that the other domain's
    digit classifier puts in the source's class (Section 5.1's "correctly matching
    different digit classes"). One pair of classifiers judges every scheme and seed;
  * the share of each side's batch weight held by the over-represented class (the
    zeros) at the start and at the end of training (the first and the last fifth of
    the logged steps), next to the shares that would re-balance the classes (below);
  * the weight ratio reached: the batch's largest pair weight over its smallest.
WORKDIR/figure3.png plots every class's share over training as Figure 3 does.

Re-balancing means the weighted class shares of the two sides agree. Any common share
between the two frequencies does; if both sides move by the same factor they meet at
the normalised geometric mean sqrt(p_x p_y) (0.25 for the zeros). Algorithm 1's pair
weights (1 + w) / 2 with w in (0, 1) differ at most by a factor (1 + 2r) / (2 + r) < 2
within a batch (r: the clip ratio), so each side can shift a class's odds by less
than 2 while the zeros' odds differ 9-fold (50% vs 10%): the reachable shares are
printed too. The table's TV gap (half the L1 distance between the two sides' shares)
is 0.4 unweighted.

  python benchmarks/quality/jdbw_batch_weight.py                 # the backend's preset
  python benchmarks/quality/jdbw_batch_weight.py --preset=cpu    # two CPU cores, <= 1 h
  python benchmarks/quality/jdbw_batch_weight.py --preset=gpu    # one GPU (see GPU_STEPS)
  python benchmarks/quality/jdbw_batch_weight.py --quick         # plumbing, a few minutes

Writes WORKDIR/seed<s>/<scheme>/ (a training workdir each), WORKDIR/judges/,
WORKDIR/figure3.png and WORKDIR/results.json.
"""

import copy
import functools
import os
import shutil
import time

import numpy as np
from absl import app, flags
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import common
from i2i_jax.data import domains, sources
from i2i_jax.evaluation import evaluators
from i2i_jax.training import runtime
from i2i_jax.training.writers import read_event_scalars
from jdbw_jax import batch_weight, default_config, evaluate, train

FLAGS = flags.FLAGS
SCHEMES = ("two_sided", "none")
# What each --schemes name trains: batch_weight.scheme, and for two_sided whether the
# pair weights are normalised per batch (the default) or used as Algorithm 1 writes them.
SCHEME_SETTINGS = {
    "two_sided": {"scheme": "two_sided", "normalize": True},
    "two_sided_unnormalized": {"scheme": "two_sided", "normalize": False},
    "one_sided": {"scheme": "one_sided", "normalize": False},
    "none": {"scheme": "none", "normalize": False},
}
JUDGE_FILES = ("classifier_x.msgpack", "classifier_y.msgpack")
JUDGE_SEED = 0  # one pair of judges for every seed: the seeds differ in training only
WINDOW_FRACTION = 0.2  # start / end values: the mean over the first / last fifth of logs
FIGURE_FILE = "figure3.png"
FIGURE_CLASSES = range(5)  # the digits Figure 3 shows; the others are drawn faint
SMOOTHING_FRACTION = 0.1  # the moving average spans a tenth of the logged steps
FIGURE_DPI = 80  # keeps the PNG under ~150 KB even for noisy curves of three schemes

# CPU preset: the digits demo's own narrow networks and sizes, meant to run the whole
# table (both schemes, three seeds) on two CPU cores within an hour.
CPU_STEPS = 300
CPU_BATCH = 32
CPU_CLASSIFIER_STEPS = 200
CPU_NUM_EVAL = 500
# Quick preset: the demo's networks, shorter; checks the plumbing, not the claim.
QUICK_STEPS = 100
QUICK_BATCH = 16
QUICK_CLASSIFIER_STEPS = 100
QUICK_NUM_EVAL = 500
# GPU preset: the paper's 32x32 networks (Tables 1-2) and d = 5 (Section 4.4) at
# batch 64 for GPU_STEPS generator steps (the paper: batch 128, 50k steps). XLA counts
# 0.91 TFLOP per generator step (5 critic steps with the gradient penalty), so a
# scheme is ~3.6 PFLOP: about 2-3 min on one H100 at an assumed 20-40 TFLOP/s
# sustained on these small fp32 convolutions, both schemes with classifiers and
# evaluation in about 5-8 min per seed. An estimate from FLOPs, not a measurement.
GPU_STEPS = 4000
GPU_BATCH = 64
# SR-MNIST's rotate/crop runs at ~1.4k records/s per core and a step reads
# (d + 1) x 64 records per domain: grain workers keep a GPU fed.
GPU_DATA_WORKERS = {"source": 4, "target": 8}


def define_flags():
  flags.DEFINE_list("schemes", list(SCHEMES), "Batch-weight schemes to compare: two_sided "
                    "(Algorithm 1, weights normalised per batch), two_sided_unnormalized "
                    "(Algorithm 1 as written), one_sided (Algorithm 2), none (no batch "
                    "weight).")


def build_config(preset: str):
  """configs/digits_demo.py (embedded MNIST -> SR-MNIST, half zeros), sized by `preset`;
  run_benchmark sets the seed."""
  config = common.load_config("configs/digits_demo.py")
  if preset in ("cpu", "quick"):  # the demo's narrow CPU networks
    cpu = preset == "cpu"
    config.batch_size = CPU_BATCH if cpu else QUICK_BATCH
    config.num_steps = CPU_STEPS if cpu else QUICK_STEPS
    config.eval.classifier_steps = CPU_CLASSIFIER_STEPS if cpu else QUICK_CLASSIFIER_STEPS
    config.num_eval = CPU_NUM_EVAL if cpu else QUICK_NUM_EVAL
    config.eval_every = 0  # scored once at the end by jdbw_jax.evaluate
  elif preset == "gpu":
    config.model = default_config.get_config().model
    config.model.noise_dim = 8  # Section 4.3: d = 8 for MNIST-SR
    config.batch_size = GPU_BATCH
    config.num_steps = GPU_STEPS
    config.eval.classifier_steps = 1500
    config.num_eval = 1000
    config.eval_every = GPU_STEPS // 4  # a class-matching curve in TensorBoard
    config.data.source.num_workers = GPU_DATA_WORKERS["source"]
    config.data.target.num_workers = GPU_DATA_WORKERS["target"]
  else:
    raise ValueError(f"unknown preset {preset!r}; expected one of {common.PRESETS}")
  # A replication computes in float32 on every backend ("auto" would pick bf16 on GPU).
  config.compute_dtype = "float32"
  # Relax the weight clip over the first half, so the last fifth runs at its end value.
  config.batch_weight.clip.relax_steps = max(config.num_steps // 2, 1)
  config.log_every = max(config.num_steps // 100, 1)
  config.sample_every = config.num_steps
  config.checkpoint_every = config.num_steps
  return config


def class_frequencies(config) -> tuple[np.ndarray, np.ndarray]:
  """(p_x, p_y): the source's label frequencies and the target's re-sampled ones."""
  labels = sources.source_labels(domains.domain_source(config.data.source))
  p_x = np.bincount(labels, minlength=config.data.num_classes) / len(labels)
  return p_x, np.asarray(config.data.target.class_probs, np.float64)


def class_match_ceiling(p_x, p_y, q_x, q_y) -> tuple[float, float]:
  """(x->y, y->x): the most class matching a translation can keep when it matches the
  weighted marginals, the joint critic's optimum.

  p_*: the class frequencies, q_*: the weighted class shares. Weighted Gxy(X) must
  have Y's shares q_y, so of X's class c at most min(1, q_y[c] / q_x[c]) can stay in
  c (the rest must fill classes that Y weighs more), and likewise from Y to X.
  """
  p_x, p_y, q_x, q_y = (np.asarray(a, np.float64) for a in (p_x, p_y, q_x, q_y))
  return (float(np.sum(p_x * np.minimum(1.0, q_y / q_x))),
          float(np.sum(p_y * np.minimum(1.0, q_x / q_y))))


def rebalancing_targets(config) -> dict:
  """The shares that re-balance the classes, what Algorithm 1 can reach, and the class
  matching that each leaves possible."""
  p_x, p_y = class_frequencies(config)
  meeting = np.sqrt(p_x * p_y) / np.sum(np.sqrt(p_x * p_y))
  clip = config.batch_weight.clip
  r = float(batch_weight.clip_ratio(config.num_steps, start=clip.start, end=clip.end,
                                    relax_steps=clip.relax_steps))
  # Two-sided pair weights (1 + sigmoid) / 2 with logits clipped to [-log r, log r].
  rho = (1 + 2 * r) / (2 + r) if np.isfinite(r) else 2.0
  skew = int(np.argmax(p_y / p_x))  # the class Y over-represents most (the zeros)
  # Best case: the skew class weighted rho times the others in X, 1/rho in Y.
  up = np.where(np.arange(len(p_x)) == skew, rho, 1.0)
  reach_x, reach_y = p_x * up / np.sum(p_x * up), p_y / up / np.sum(p_y / up)
  return {
      "freq_x": p_x.tolist(), "freq_y": p_y.tolist(), "meeting_point": meeting.tolist(),
      "freq_tv_gap": float(0.5 * np.abs(p_x - p_y).sum()),
      "final_clip_ratio": r, "two_sided_max_weight_ratio": rho, "skew_class": skew,
      "two_sided_reachable": {"share_x": float(reach_x[skew]), "share_y": float(reach_y[skew])},
      "class_match_ceiling": {
          "none": class_match_ceiling(p_x, p_y, p_x, p_y),
          "two_sided": class_match_ceiling(p_x, p_y, reach_x, reach_y),
          "rebalanced": class_match_ceiling(p_x, p_y, meeting, meeting)},
  }


def train_judges(config, directory: str) -> None:
  """The digit classifiers of both domains, trained once (seed JUDGE_SEED) and copied
  into every run: class matching and the domain-feature FID then use one judge for
  all schemes and seeds."""
  config = copy.deepcopy(config)
  config.seed = JUDGE_SEED
  shape = (config.data.source.image_size,) * 2 + (config.data.source.channels,)
  os.makedirs(directory, exist_ok=True)
  for name, domain in zip(("x", "y"), (config.data.source, config.data.target)):
    domain = copy.deepcopy(domain)
    domain.num_workers = 0  # a few hundred small batches
    evaluators.cached_classifier(
        os.path.join(directory, f"classifier_{name}.msgpack"),
        functools.partial(evaluate.classifier_batches, config, domain), config.data.num_classes,
        shape, steps=config.eval.classifier_steps, seed=config.seed)


def logged_series(scalars: dict, tag: str) -> tuple[np.ndarray, np.ndarray]:
  """(steps, values) of one scalar in step order; where a resumed run logged a step
  again, its last value."""
  by_step = dict(scalars[tag])
  steps = np.array(sorted(by_step))
  return steps, np.array([by_step[s] for s in steps], np.float64)


def class_shares(scalars: dict, side: str, num_classes: int, prefix: str = "class_share"):
  """(steps, (T, num_classes) shares) of one side's `<prefix>_<side>/<c>` scalars."""
  series = [logged_series(scalars, f"{prefix}_{side}/{c}") for c in range(num_classes)]
  return series[0][0], np.stack([values for _, values in series], axis=1)


def window_mean(values: np.ndarray, at: str):
  """The mean over the first (`at="start"`) or last (`"end"`) WINDOW_FRACTION of the
  logged values, per column for (T, C) values."""
  k = max(1, round(WINDOW_FRACTION * len(values)))
  return np.mean(values[:k] if at == "start" else values[-k:], axis=0)


def relative_weights(shares, freqs) -> list[float | None]:
  return [s / f if f > 0 else None for s, f in zip(shares, freqs)]


SCORES = ("class_match_x_to_y", "class_match_y_to_x", "fid_x_to_y_domain",
          "fid_y_to_x_domain", "classifier_acc_x", "classifier_acc_y")


def run_scheme(config, scheme: str, run_dir: str, judges_dir: str, skew: int):
  """Trains (or resumes) one scheme in run_dir and scores its final state: its row of
  results.json, and its per-class share series {side: (steps, shares)} for Figure 3.
  `skew` is the class whose shares the table shows."""
  config = copy.deepcopy(config)
  config.batch_weight.update(SCHEME_SETTINGS[scheme])
  os.makedirs(run_dir, exist_ok=True)
  for name in JUDGE_FILES:
    shutil.copyfile(os.path.join(judges_dir, name), os.path.join(run_dir, name))
  start = time.perf_counter()
  train.train_and_evaluate(config, run_dir)
  train_s = time.perf_counter() - start
  scores = evaluate.evaluate_run(run_dir, inception_weights="")["metrics"]
  scalars = read_event_scalars(os.path.join(run_dir, "tensorboard"))
  n = config.data.num_classes
  series = {side: class_shares(scalars, side, n) for side in "xy"}
  row = {"seed": config.seed, "scheme": scheme, **{key: scores[key] for key in SCORES}}
  for side in "xy":
    first, last = (window_mean(series[side][1], at).tolist() for at in ("start", "end"))
    freq = window_mean(class_shares(scalars, side, n, "class_freq")[1], "end").tolist()
    ratio = window_mean(logged_series(scalars, f"weight_{side}_ratio")[1], "end")
    row.update({
        f"share_{side}_start": first, f"share_{side}": last,
        f"skew_share_{side}_start": first[skew], f"skew_share_{side}_end": last[skew],
        f"batch_freq_{side}": freq,
        # A class's mean weight over the batch's mean weight: share / frequency.
        f"relative_weight_{side}": relative_weights(last, freq),
        f"weight_ratio_{side}": float(ratio)})
  row["share_tv_gap"] = float(0.5 * np.abs(np.subtract(row["share_x"], row["share_y"])).sum())
  row.update(train_s=train_s, wall_s=time.perf_counter() - start)
  return row, series


AGGREGATED = ("class_match_x_to_y", "class_match_y_to_x", "skew_share_x_start",
              "skew_share_x_end", "skew_share_y_start", "skew_share_y_end",
              "weight_ratio_x", "weight_ratio_y", "share_tv_gap", "fid_x_to_y_domain",
              "fid_y_to_x_domain")


def run_benchmark(config, workdir: str, schemes=SCHEMES, seeds=(0,)) -> dict:
  """Every scheme on `config` once per seed; the results as results.json holds them.
  Also writes WORKDIR/figure3.png."""
  start = time.perf_counter()
  expected = rebalancing_targets(config)
  skew = expected["skew_class"]
  judges_dir = os.path.join(workdir, "judges")
  train_judges(config, judges_dir)
  runs, series = [], {scheme: {"x": [], "y": []} for scheme in schemes}
  for seed in seeds:
    seeded = copy.deepcopy(config)
    seeded.seed = seed
    for scheme in schemes:
      run_dir = os.path.join(common.seed_dir(workdir, seed), scheme)
      row, shares = run_scheme(seeded, scheme, run_dir, judges_dir, skew)
      runs.append(row)
      for side in "xy":
        series[scheme][side].append(shares[side])
  figure = os.path.join(workdir, FIGURE_FILE)
  save_figure(plot_figure3(series, skew_class=skew,
                           rebalanced_share=expected["meeting_point"][skew]), figure)
  return {
      "benchmark": "jdbw_batch_weight", "workdir": workdir, "seeds": list(seeds),
      "batch_size": config.batch_size, "d_steps": config.d_steps,
      "num_steps": config.num_steps, "num_eval": config.num_eval,
      "expected": expected, "runs": runs,
      "aggregates": common.aggregate(runs, ("scheme",), AGGREGATED), "figure": figure,
      "wall_s": time.perf_counter() - start,
  }


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
  """The trailing mean of `window` rows of (T, C) values: (T - window + 1, C)."""
  cumulative = np.cumsum(np.pad(values, ((1, 0), (0, 0))), axis=0)
  return (cumulative[window:] - cumulative[:-window]) / window


def plot_figure3(series: dict, *, skew_class: int, rebalanced_share: float) -> Figure:
  """Figure 3: each class's share of the batch weight over training, moving-averaged;
  one panel per domain (rows) and scheme (columns).

  series[scheme][side] lists per seed (steps, (T, num_classes) shares). The line is
  the mean over seeds at the steps every seed logged; `skew_class` (the class the
  claim is about) gets a band: the seeds' range. Classes FIGURE_CLASSES are drawn in
  colour, the others faint; a dotted line marks `rebalanced_share`, the share of
  `skew_class` that re-balances the classes.
  """
  schemes = list(series)
  figure = Figure(figsize=(4 * len(schemes) + 1, 5.6), layout="constrained")
  axes = figure.subplots(2, len(schemes), sharex=True, sharey=True, squeeze=False)
  titles = {"x": "domain X (source)", "y": "domain Y (target)"}
  for column, scheme in enumerate(schemes):
    for row, side in enumerate("xy"):
      ax = axes[row, column]
      per_seed = series[scheme][side]
      steps = functools.reduce(np.intersect1d, [s for s, _ in per_seed])
      window = max(1, round(SMOOTHING_FRACTION * len(steps)))
      smooth = np.stack([moving_average(shares[np.isin(s, steps)], window)
                         for s, shares in per_seed])  # (seeds, T', C)
      x = steps[window - 1:]
      faint = [c for c in range(smooth.shape[2]) if c not in FIGURE_CLASSES]
      for c in range(smooth.shape[2]):
        highlighted = c in FIGURE_CLASSES
        style = ({"color": f"C{c}", "linewidth": 1.6, "label": str(c)} if highlighted else
                 {"color": "0.75", "linewidth": 0.8,
                  "label": f"{faint[0]}-{faint[-1]}" if c == faint[0] else None})
        ax.plot(x, smooth[:, :, c].mean(0), **style)
        if c == skew_class and len(per_seed) > 1:
          ax.fill_between(x, smooth[:, :, c].min(0), smooth[:, :, c].max(0),
                          color=f"C{c}", alpha=0.15, linewidth=0)
      ax.axhline(rebalanced_share, color="black", linestyle=":", linewidth=1,
                 label=f"{skew_class} re-balanced")
      ax.set_title(f"{scheme}: {titles[side]}", fontsize=10)
      ax.grid(alpha=0.3)
      if row == 1:
        ax.set_xlabel("generator step")
      if column == 0:
        ax.set_ylabel("share of the batch weight")
  seeds = len(next(iter(series.values()))["x"])
  axes[0, 0].set_ylim(bottom=0)  # after plotting: the shared top still autoscales
  figure.legend(*axes[0, 0].get_legend_handles_labels(), title="class", fontsize=8,
                title_fontsize=8, loc="outside right center")
  figure.suptitle(f"Per-class weight share, moving average over {SMOOTHING_FRACTION:.0%} of "
                  f"training;\nmean of {seeds} seed(s)"
                  + (f", band: class {skew_class}'s range" if seeds > 1 else ""),
                  fontsize=10)
  return figure


def save_figure(figure: Figure, path: str) -> None:
  FigureCanvasAgg(figure)  # renders with Agg, without pyplot's global state
  figure.savefig(path, dpi=FIGURE_DPI)


def format_results(results: dict) -> str:
  expected, runs = results["expected"], results["runs"]
  c = expected["skew_class"]
  seeds = results["seeds"]
  title = (f"JD-BW, embedded MNIST -> SR-MNIST (class {c}: {expected['freq_x'][c]:.0%} of X, "
           f"{expected['freq_y'][c]:.0%} of Y), batch {results['batch_size']}, "
           f"d={results['d_steps']}, {results['num_steps']} generator steps, "
           f"{results['num_eval']} samples per direction; mean ± std over "
           f"{len(seeds)} seed(s) {','.join(map(str, seeds))}")
  headers = ["scheme", "match x->y", "match y->x", f"share{c} x start", f"share{c} x end",
             f"share{c} y start", f"share{c} y end", "w ratio x", "w ratio y", "TV gap"]
  rows = [[a["scheme"], a["class_match_x_to_y"], a["class_match_y_to_x"],
           a["skew_share_x_start"], a["skew_share_x_end"], a["skew_share_y_start"],
           a["skew_share_y_end"], a["weight_ratio_x"], a["weight_ratio_y"], a["share_tv_gap"]]
          for a in results["aggregates"]]
  reach = expected["two_sided_reachable"]
  notes = [
      f"unweighted: share{c} x {expected['freq_x'][c]:.3f}, y {expected['freq_y'][c]:.3f}, "
      f"TV gap {expected['freq_tv_gap']:.3f}; re-balanced (both sides moved alike): "
      f"share{c} = {expected['meeting_point'][c]:.3f} on both sides, TV gap 0",
      f"two_sided at the final clip ratio {expected['final_clip_ratio']:.1f}: weights differ "
      f"at most {expected['two_sided_max_weight_ratio']:.2f}x (w ratio), so share{c} x <= "
      f"{reach['share_x']:.3f} and share{c} y >= {reach['share_y']:.3f}",
      "class-match ceiling (x->y / y->x) of a translation that matches the weighted "
      "marginals: " + ", ".join(f"{name} {x:.3f} / {y:.3f}" for name, (x, y)
                                in expected["class_match_ceiling"].items()),
      f"share{c}: class {c}'s share of the batch weight, start / end: mean over the first / "
      "last fifth of the logged steps; w ratio: the batch's largest pair weight over its "
      "smallest (end); TV gap: end; std: sample std over seeds",
      "match: digit classifiers of the other domain, one pair for every scheme and seed "
      f"(accuracy on real images: x {runs[0]['classifier_acc_x']:.3f}, "
      f"y {runs[0]['classifier_acc_y']:.3f})",
      f"Figure 3 (every class's share over training): {results['figure']}",
  ]
  for scheme in [a["scheme"] for a in results["aggregates"] if a["scheme"] != "none"]:
    diffs = [common.paired_difference(runs, "scheme", scheme, "none", f"class_match_{d}")
             for d in ("x_to_y", "y_to_x")]
    if diffs[0]:
      notes.append(f"{scheme} - none, paired by seed: match x->y "
                   f"{common.format_paired(diffs[0])}, y->x {common.format_paired(diffs[1])}")
  seed_headers = ["scheme", "seed", "match x->y", "match y->x", f"share{c} x", f"share{c} y",
                  "TV gap", f"rel w{c} x", f"rel w{c} y", "FID x->y", "FID y->x", "wall s"]
  seed_rows = [[r["scheme"], r["seed"], r["class_match_x_to_y"], r["class_match_y_to_x"],
                r["share_x"][c], r["share_y"][c], r["share_tv_gap"], r["relative_weight_x"][c],
                r["relative_weight_y"][c], r["fid_x_to_y_domain"], r["fid_y_to_x_domain"],
                round(r["wall_s"])] for r in runs]
  schemes = [a["scheme"] for a in results["aggregates"]]
  mean_share = {(s, side): np.mean([r[f"share_{side}"] for r in runs if r["scheme"] == s], 0)
                for s in schemes for side in "xy"}
  per_class_headers = ["class", "freq x", "freq y", "meeting"] + [
      f"{scheme} {side}" for scheme in schemes for side in ("x", "y")]
  per_class = [[k, expected["freq_x"][k], expected["freq_y"][k], expected["meeting_point"][k]]
               + [float(mean_share[s, side][k]) for s in schemes for side in ("x", "y")]
               for k in range(len(expected["freq_x"]))]
  return "\n".join([f"== {title}", common.format_table(headers, rows), *notes, "",
                    "== per seed (end of training; rel w: the class's mean weight over the "
                    "batch's, 1 = not re-weighted; FID in the judges' 128-d features)",
                    common.format_table(seed_headers, seed_rows), "",
                    "== per-class weight shares at the end, mean over seeds (Figure 3)",
                    common.format_table(per_class_headers, per_class)])


def main(argv):
  del argv
  runtime.initialize()
  preset = common.preset_from_flags()
  unknown = set(FLAGS.schemes) - set(SCHEME_SETTINGS)
  if unknown:
    raise app.UsageError(f"unknown --schemes {sorted(unknown)}; valid: {tuple(SCHEME_SETTINGS)}")
  workdir = common.workdir_from_flags("jdbw")
  results = run_benchmark(build_config(preset), workdir, tuple(FLAGS.schemes),
                          common.seeds_from_flags(preset))
  common.report(workdir, results, preset, format_results)


if __name__ == "__main__":
  common.define_flags()
  define_flags()
  app.run(main)

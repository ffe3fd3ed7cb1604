"""The translator or the judge? Checks of the class-matching judge on a BalaGAN run.

Why: the offline demo's seed 0 reads `class_match_a_to_b` 0.77 at step 800 while most
digits in its grids are legible. Before blaming the translator, check the instrument:
its own spread, what generator-like defects alone cost it, whether a judge trained to
ignore colour reads better, and whether the outputs carry the reference's digit.

  .venv/bin/python benchmarks/quality/balagan_judge_check.py --workdir=/tmp/bd [--step=800]

Prints, for the run's evaluation sources and references (as `balagan_jax.evaluate`):
- class match by the run's judge, per source class with the classes it read instead;
- "reference leak": outputs read as the reference's digit where it differs from the
  source's (FUNIT-style translators can copy content from the reference);
- class match by judges trained again with other initialisation seeds (mean ± std;
  the first, seed config.seed, is the run's own judge);
- the judge's accuracy on digits painted in B's colours: the perfect translation (the
  evaluation sources painted) and the 500 test digits neither network saw, clean and
  with Gaussian noise, blur and 1-2 pixel shifts (generator-like defects, no generator);
- a judge trained with colour jitter and blur (the demo encoder's style-hiding
  augmentations): its accuracy on the test digits and its class match.
Writes OUTPUT/judge_check.json and OUTPUT/misread.png (rows: source, output, for the
first misread translations); OUTPUT defaults to WORKDIR/judge_check.
"""

import dataclasses
import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import app, flags
from etils import epath

import common
from balagan_jax import augment, default_config, evaluate, translate
from i2i_jax import files, images
from i2i_jax.evaluation import classifier, evaluators

FLAGS = flags.FLAGS

HELD_OUT_SPLIT = "test"  # the embedded digits' last 500: the demo trains on neither
COLOUR_BLIND_AUGMENTATIONS = ("color_jitter", "blur")
NOISE_STDS = (0.1, 0.2, 0.3)  # in the [-1, 1] pixel range
BLUR_SIGMAS = (0.5, 0.8)
SHIFTS = (1, 2)
MISREAD_SHOWN = 16


def augmented(batches, names, seed: int):
  """`batches` with `augment.augment_batch(names)` applied, a fresh key per batch."""
  key = jax.random.key(seed)
  for i, batch in enumerate(batches):
    yield {**batch, "image": augment.augment_batch(jax.random.fold_in(key, i), batch["image"],
                                                   names)}


def gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
  """Separable Gaussian blur of (N, H, W, C) images, edges reflected."""
  radius = max(1, int(3 * sigma + 0.5))
  taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
  taps /= taps.sum()
  for axis in (1, 2):
    padded = np.pad(x, [(radius, radius) if a == axis else (0, 0) for a in range(4)],
                    mode="reflect")
    size = x.shape[axis]
    x = sum(t * np.take(padded, np.arange(i, i + size), axis=axis) for i, t in enumerate(taps))
  return x


def perturbations(x: np.ndarray, seed: int) -> dict[str, np.ndarray]:
  """Generator-like defects applied to clean images in [-1, 1]."""
  rng = np.random.default_rng(seed)
  out = {"clean": x}
  for std in NOISE_STDS:
    out[f"noise {std}"] = x + rng.normal(0.0, std, x.shape)
  for sigma in BLUR_SIGMAS:
    out[f"blur {sigma}"] = gaussian_blur(x, sigma)
  for shift in SHIFTS:
    out[f"shift {shift}px"] = np.roll(x, shift, axis=2)
  return {name: np.clip(v, -1, 1).astype(np.float32) for name, v in out.items()}


@dataclasses.dataclass(frozen=True)
class JudgedRun:
  """A run's checkpoint with the settings it was evaluated with and its judge."""
  model: Any
  state: Any
  config: ml_collections.ConfigDict
  num_eval: int
  judge: Any
  num_labels: int

  def read(self, params, x: np.ndarray) -> np.ndarray:
    """The digits that a judge with `params` reads in images `x`."""
    return classifier.predict(params, x, self.num_labels)


def load_judged_run(workdir: str, step: int | None) -> JudgedRun:
  """`workdir`'s checkpoint `step` (None: the latest) and the judge it was scored by."""
  model, state = translate.load_model(workdir, step or 0)
  config, _, num_eval = evaluators.run_settings(
      model.config, default_config.get_config(), "", None, workdir=workdir,
      can_evaluate=evaluate.can_evaluate, missing_judges="config.eval.classifier_steps = 0")
  num_labels = evaluate.shared_label_classes(config)
  if not num_labels:
    raise app.UsageError(f"{workdir}: the domains do not share labels; nothing to judge")
  judge_path = epath.Path(workdir) / evaluate.JUDGE_FILE
  if not judge_path.exists():
    raise app.UsageError(f"{judge_path} is missing: evaluate the run once first")
  judge = classifier.load_params(judge_path, num_labels, model.image_shape)
  return JudgedRun(model, state, config, num_eval, judge, num_labels)


def check(workdir: str, step: int | None,
          judge_seeds: int) -> tuple[dict, np.ndarray | None]:
  """The checks of the module docstring on `workdir`'s checkpoint `step` (None: the
  latest). Returns what judge_check.json holds and the misread grid (None if none)."""
  run = load_judged_run(workdir, step)
  model, state, config, num_eval, judge, num_labels = (
      run.model, run.state, run.config, run.num_eval, run.judge, run.num_labels)
  read = run.read
  train_judge = lambda batches, seed: classifier.train_classifier(
      batches, num_labels, model.image_shape, steps=config.eval.classifier_steps, seed=seed)

  sources, references = evaluate.evaluation_pairs(config, num_eval)
  labels = sources["label"]
  sample = evaluate.make_sampler(model)

  def translations(generator_state):
    return evaluators.in_batches(lambda x, y: sample(generator_state, x, y),
                                 (sources["image"], references["image"]),
                                 config.eval.batch_size)[0]

  outputs = translations(state)
  readings = read(judge, outputs)
  class_match = lambda params: float(np.mean(read(params, outputs) == labels))
  differ = labels != references["label"]
  per_class = {
      int(c): {"n": int((labels == c).sum()),
               "class_match": float(np.mean(readings[labels == c] == c)),
               "read_as": np.bincount(readings[labels == c], minlength=num_labels).tolist()}
      for c in np.unique(labels)}
  # Seed config.seed is the run's own judge: the first value reproduces class_match.
  retrained = [class_match(train_judge(evaluate.target_label_batches(config), config.seed + i))
               for i in range(judge_seeds)]

  held_out = common.source_like_domain(config, HELD_OUT_SPLIT, painted=True)
  held_out.max_records = 0  # all of them, whatever caps A
  test = common.every_record(held_out, seed=0)
  painted_a = common.source_like_domain(config, config.data.source.split, painted=True)
  perfect = evaluate.evaluation_sources(config, num_eval, painted_a)
  if not np.array_equal(perfect["label"], labels):
    raise RuntimeError("painting A's digits changed which ones the fixed batch draws")
  colour_blind = train_judge(
      augmented(evaluate.target_label_batches(config), COLOUR_BLIND_AUGMENTATIONS,
                config.seed + 9), config.seed)

  results = {
      "workdir": workdir, "step": int(state.step), "num_eval": num_eval,
      "class_match": float(np.mean(readings == labels)),
      "class_match_raw_generator": float(np.mean(
          read(judge, translations(state.replace(g_ema=state.g.params))) == labels)),
      "per_source_class": per_class,
      "reference_leak": float(np.mean(readings[differ] == references["label"][differ])),
      "class_match_retrained_judges": common.mean_std(retrained) | {"values": retrained},
      "judge_on_perfect_translation": float(np.mean(read(judge, perfect["image"]) == labels)),
      "judge_on_grey_sources": float(np.mean(read(judge, sources["image"]) == labels)),
      f"judge_on_{len(test['label'])}_test_digits_in_b_colours": {
          name: float(np.mean(read(judge, x) == test["label"]))
          for name, x in perturbations(test["image"], config.seed).items()},
      "colour_blind_judge": {
          "augmentations": list(COLOUR_BLIND_AUGMENTATIONS),
          "test_digits": float(np.mean(read(colour_blind, test["image"]) == test["label"])),
          "class_match": class_match(colour_blind)},
  }
  misread = np.flatnonzero(readings != labels)[:MISREAD_SHOWN]
  grid = (images.make_grid([sources["image"][misread], outputs[misread]]) if misread.size
          else None)
  return results, grid


def define_flags() -> None:
  """Called by `__main__` only, so that importing the module (tests) defines no flags."""
  flags.DEFINE_string("workdir", None, "A BalaGAN run whose domains share labels (the demo).")
  flags.DEFINE_integer("step", None, "Checkpoint step; default the latest.")
  flags.DEFINE_integer("judge_seeds", 5, "Judges trained again, seeds config.seed + 0..N-1.")
  flags.DEFINE_string("output", None, "Default WORKDIR/judge_check.")
  flags.mark_flag_as_required("workdir")


def main(argv):
  del argv
  results, grid = check(FLAGS.workdir, FLAGS.step, FLAGS.judge_seeds)
  output = epath.Path(FLAGS.output or os.path.join(FLAGS.workdir, "judge_check"))
  output.mkdir(parents=True, exist_ok=True)
  files.write_atomic(output / "judge_check.json", json.dumps(results, indent=2) + "\n")
  if grid is not None:
    images.save_png(output / "misread.png", grid)
  print(json.dumps(results, indent=2))


if __name__ == "__main__":
  define_flags()
  app.run(main)

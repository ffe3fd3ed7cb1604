"""Class match of BalaGAN runs over every image of A: to compare recipes on the demo.

Why: a run logs class matching on 300 fixed pairs, a sampling error of about ± 0.02 at
0.8, as large as the effects a recipe change has to show. This reads every image of
A (2,250 for the demo), each translated with a reference drawn from B, for
`--reference_draws` independent draws (about ± 0.008 each), with each run's own
judge (`balagan_jax.evaluate`'s), then the mean ± std over the runs (seeds).

  .venv/bin/python benchmarks/quality/balagan_class_match.py --step=800 \\
      --workdirs=/tmp/bd_s0,/tmp/bd_s1,/tmp/bd_s2 [--output=results.json]
"""

import json

import numpy as np
from absl import app, flags

import common
from balagan_jax import evaluate
from i2i_jax import files
from i2i_jax.data import pipeline
from i2i_jax.evaluation import evaluators
from balagan_judge_check import load_judged_run

FLAGS = flags.FLAGS

SOURCE_SEED = 100  # the order A is read in; references: REFERENCE_SEED + draw
REFERENCE_SEED = 200


def class_match_all_sources(workdir: str, step: int | None, reference_draws: int) -> dict:
  """Class match of `workdir`'s EMA generator over every image of A, one value per
  draw of B references."""
  run = load_judged_run(workdir, step)
  config = run.config
  sources = common.every_record(config.data.source, SOURCE_SEED)
  num_sources = len(sources["label"])
  sample = evaluate.make_sampler(run.model)
  per_draw = []
  for draw in range(reference_draws):
    references = pipeline.fixed_batch(config.data.target, num_sources,
                                      seed=REFERENCE_SEED + draw)
    outputs = evaluators.in_batches(lambda x, y: sample(run.state, x, y),
                                    (sources["image"], references["image"]),
                                    config.eval.batch_size)[0]
    per_draw.append(float(np.mean(run.read(run.judge, outputs) == sources["label"])))
  return {"workdir": workdir, "step": int(run.state.step), "num_sources": num_sources,
          "class_match_per_draw": per_draw, "class_match": float(np.mean(per_draw))}


def define_flags() -> None:
  """Called by `__main__` only, so that importing the module (tests) defines no flags."""
  flags.DEFINE_list("workdirs", None, "BalaGAN runs whose domains share labels (seeds).")
  flags.DEFINE_integer("step", None, "Checkpoint step of every run; default each's latest.")
  flags.DEFINE_integer("reference_draws", 3, "Independent draws of B references.")
  flags.DEFINE_string("output", None, "Optional JSON file for the results.")
  flags.mark_flag_as_required("workdirs")


def main(argv):
  del argv
  runs = [class_match_all_sources(w, FLAGS.step, FLAGS.reference_draws)
          for w in FLAGS.workdirs]
  results = {"runs": runs, "class_match": common.mean_std([r["class_match"] for r in runs])}
  rows = [(r["workdir"], r["step"], " / ".join(f"{v:.3f}" for v in r["class_match_per_draw"]),
           r["class_match"]) for r in runs]
  rows.append((f"mean ± std, {len(runs)} runs", "", "", results["class_match"]))
  print(common.format_table(("run", "step", "per draw", "class match (all of A)"), rows))
  if FLAGS.output:
    files.write_atomic(FLAGS.output, json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
  define_flags()
  app.run(main)

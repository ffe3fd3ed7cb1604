"""The quality benchmarks (benchmarks/quality/) on tiny runs: plumbing, tables, results.

The default tests shrink each benchmark's config to a few steps of tiny networks; the
slow ones run the scripts as a user would, with --quick.
"""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import balagan_tiny
import jdbw_tiny
from balagan_jax import train as balagan_train
from i2i_jax.data import domains, sources
from i2i_jax.training import writers

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUALITY_DIR = os.path.join(REPO_ROOT, "benchmarks", "quality")
sys.path.insert(0, QUALITY_DIR)  # The scripts import their `common` module by name.

import balagan_class_match  # noqa: E402
import balagan_judge_check  # noqa: E402
import balagan_target_size  # noqa: E402
import common  # noqa: E402
import jdbw_batch_weight  # noqa: E402


def tiny_jdbw_config():
  """The JD-BW tests' tiny config (their compilations are cached) run as the benchmark
  would: final checkpoint and samples only, scored by jdbw_jax.evaluate at the end."""
  return jdbw_tiny.tiny_config(**{"eval_every": 0, "checkpoint_every": 4})


def tiny_balagan_config():
  """The BalaGAN tests' tiny networks (their compilations are cached) on the
  benchmark's data layout, with A cut to 200 digits."""
  demo = balagan_target_size.build_config("quick").data
  return balagan_tiny.tiny_config(**{
      "data.source.split": demo.source.split, "data.source.max_records": 200,
      "data.target.split": demo.target.split,
      "data.target.colorize_foreground": demo.target.colorize_foreground,
      "data.target.colorize_background": demo.target.colorize_background,
      "eval_every": 0, "eval.classifier_steps": 20, "eval.classifier_batch": 32,
      "eval.kid_subset_size": 100})


def test_rebalancing_targets_follow_the_sr_mnist_frequencies():
  expected = jdbw_batch_weight.rebalancing_targets(jdbw_batch_weight.build_config("quick"))
  assert expected["skew_class"] == 0
  np.testing.assert_allclose(expected["freq_x"], [0.1] * 10)
  assert expected["freq_y"][0] == pytest.approx(0.5)
  assert expected["freq_tv_gap"] == pytest.approx(0.4)
  # sqrt(0.1 * 0.5) / (sqrt(0.05) + 9 sqrt(0.1 * 0.5 / 9)) = 1 / 4.
  assert expected["meeting_point"][0] == pytest.approx(0.25)
  assert sum(expected["meeting_point"]) == pytest.approx(1.0)
  # Clip ratio 20 at the end: weights differ at most 41/22 times.
  assert expected["two_sided_max_weight_ratio"] == pytest.approx(41 / 22)
  reach = expected["two_sided_reachable"]
  # Zeros weighted 41/22 times the others in X: 0.1 * 41/22 / (0.1 * 41/22 + 0.9).
  assert reach["share_x"] == pytest.approx(0.41 / 2.39)
  assert reach["share_y"] == pytest.approx(0.5 / (0.5 + 0.5 * 41 / 22))
  ceiling = expected["class_match_ceiling"]
  # Unweighted, half of X's non-zeros must become zeros (and 4 in 5 of Y's zeros
  # non-zeros): 0.1 + 0.9 * (0.5/9) / 0.1 = 0.6 both ways.
  np.testing.assert_allclose(ceiling["none"], [0.6, 0.6])
  np.testing.assert_allclose(ceiling["rebalanced"], [1.0, 1.0])
  assert 0.6 < ceiling["two_sided"][1] < 0.8 < ceiling["two_sided"][0] < 1.0


@pytest.mark.parametrize("script", [jdbw_batch_weight, balagan_target_size])
def test_presets_size_the_runs(script):
  for preset in common.PRESETS:
    config = script.build_config(preset)
    assert config.num_steps == getattr(script, f"{preset.upper()}_STEPS")
    assert config.checkpoint_every == config.num_steps  # one checkpoint: the scored one
  assert script.build_config("cpu").batch_size == script.CPU_BATCH
  assert script.build_config("gpu").batch_size == script.GPU_BATCH
  with pytest.raises(ValueError, match="unknown preset 'tpu'"):
    script.build_config("tpu")


def test_jdbw_benchmark_reports_rates_and_weight_shares_over_seeds(tmp_path):
  # Algorithm 1 only (its compilations are the JD-BW tests'); the quick run (slow
  # test) covers the scheme "none" too.
  config = tiny_jdbw_config()
  results = jdbw_batch_weight.run_benchmark(config, str(tmp_path), schemes=("two_sided",),
                                            seeds=(0, 1))
  assert [(run["scheme"], run["seed"]) for run in results["runs"]] == [("two_sided", 0),
                                                                         ("two_sided", 1)]
  assert sorted(os.listdir(tmp_path / "judges")) == sorted(jdbw_batch_weight.JUDGE_FILES)
  max_ratio = results["expected"]["two_sided_max_weight_ratio"]
  for run in results["runs"]:
    assert os.path.isdir(tmp_path / f"seed{run['seed']}" / "two_sided")
    assert 0 <= run["class_match_x_to_y"] <= 1 and 0 <= run["class_match_y_to_x"] <= 1
    assert math.isfinite(run["fid_x_to_y_domain"]) and math.isfinite(run["fid_y_to_x_domain"])
    for side in ("x", "y"):
      for at in ("_start", ""):
        assert sum(run[f"share_{side}{at}"]) == pytest.approx(1.0, abs=1e-4)
      # Pair weights differ at most max_ratio times, so does a class's mean weight
      # from the batch's.
      assert 1 <= run[f"weight_ratio_{side}"] <= max_ratio + 1e-4
      for weight in filter(None, run[f"relative_weight_{side}"]):
        assert 1 / max_ratio - 1e-4 <= weight <= max_ratio + 1e-4
  aggregate, = results["aggregates"]
  matches = [run["class_match_x_to_y"] for run in results["runs"]]
  assert aggregate["class_match_x_to_y"] == {"mean": pytest.approx(np.mean(matches)),
                                             "std": pytest.approx(np.std(matches, ddof=1)),
                                             "n": 2}
  table = jdbw_batch_weight.format_results(results)
  for header in ("match x->y", "share0 x start", "w ratio y", "== per seed", "two_sided x"):
    assert header in table
  assert " ± " in table
  with open(results["figure"], "rb") as f:
    png = f.read()
  assert png.startswith(b"\x89PNG\r\n\x1a\n") and 10_000 < len(png) < 150_000
  path = common.write_results(str(tmp_path), results)
  assert json.load(open(path))["runs"][1]["share_y"] == results["runs"][1]["share_y"]


def test_figure3_plots_every_scheme_and_domain_from_share_series(tmp_path):
  rng = np.random.default_rng(0)
  steps = np.arange(10, 510, 10)
  rising = np.linspace(0.1, 0.2, len(steps))

  def logged(zeros, seed):
    """(steps, shares) of one seed: the zeros' share, the rest spread over 1-9; seed 1
    logged one step more, which the mean over the seeds leaves out."""
    others = np.repeat(((1 - zeros) / 9)[:, None], 9, 1) + rng.normal(0, 1e-3, (len(steps), 9))
    shares = np.concatenate([zeros[:, None], others], 1)
    return (np.append(steps, 510), np.vstack([shares, shares[-1:]])) if seed else (steps, shares)

  series = {scheme: {"x": [logged(rising + 0.02 * seed, seed) for seed in (0, 1)],
                     "y": [logged(0.7 - rising, seed) for seed in (0, 1)]}
            for scheme in ("two_sided", "none")}
  figure = jdbw_batch_weight.plot_figure3(series, skew_class=0, rebalanced_share=0.25)
  assert [ax.get_title() for ax in figure.axes[:4]] == [
      "two_sided: domain X (source)", "none: domain X (source)",
      "two_sided: domain Y (target)", "none: domain Y (target)"]
  assert [text.get_text() for text in figure.legends[0].get_texts()] == [
      "0", "1", "2", "3", "4", "5-9", "0 re-balanced"]
  zeros = figure.axes[0].get_lines()[0]
  # The mean of the seeds, moving-averaged over 5 of the 50 steps both logged.
  np.testing.assert_allclose(zeros.get_xdata(), steps[4:])
  np.testing.assert_allclose(zeros.get_ydata(),
                             np.convolve(rising + 0.01, np.ones(5) / 5, "valid"), atol=1e-3)
  path = str(tmp_path / "figure3.png")
  jdbw_batch_weight.save_figure(figure, path)
  assert 10_000 < os.path.getsize(path) < 150_000


def test_mean_std_over_seeds_and_its_table_cell():
  runs = [{"scheme": "a", "seed": 0, "fid": 1.0}, {"scheme": "b", "seed": 0, "fid": 5.0},
          {"scheme": "a", "seed": 1, "fid": 3.0}]
  a, b = common.aggregate(runs, ("scheme",), ("fid",))
  assert a == {"scheme": "a", "fid": {"mean": 2.0, "std": pytest.approx(math.sqrt(2)), "n": 2}}
  assert b == {"scheme": "b", "fid": {"mean": 5.0, "std": None, "n": 1}}
  table = common.format_table(["scheme", "FID"], [[a["scheme"], a["fid"]], [b["scheme"], b["fid"]]])
  assert table.splitlines()[2:] == ["     a  2.000 ± 1.414", "     b          5.000"]


def test_paired_difference_pairs_runs_by_seed():
  runs = [{"scheme": "w", "seed": 0, "m": 0.70}, {"scheme": "none", "seed": 0, "m": 0.60},
          {"scheme": "w", "seed": 1, "m": 0.95}, {"scheme": "none", "seed": 1, "m": 0.90},
          {"scheme": "w", "seed": 2, "m": 0.50}]  # seed 2 has no baseline: left out
  difference = common.paired_difference(runs, "scheme", "w", "none", "m")
  # Levels differ by 0.3 between seeds, the differences by 0.05 only.
  assert difference == {"mean": pytest.approx(0.075), "std": pytest.approx(0.05 / math.sqrt(2)),
                        "n": 2, "positive": 2}
  assert common.format_paired(difference) == "+0.075 ± 0.035 (2/2 seeds > 0)"
  assert common.paired_difference(runs, "scheme", "w", "other", "m") is None


@pytest.mark.slow  # ~40 s of compiles (two translation steps), then a second seed
def test_balagan_benchmark_reports_fid_per_variant_and_seed(tmp_path):
  # One size only: the quick run (slow test) covers several.
  results = balagan_target_size.run_benchmark(tiny_balagan_config(), str(tmp_path),
                                              sizes=(40,), seeds=(0, 1))
  assert [(run["seed"], run["target_size"], run["variant"]) for run in results["runs"]] == [
      (0, 40, "balagan"), (0, 40, "k1"), (1, 40, "balagan"), (1, 40, "k1")]
  # The rule: the smallest k with |B| >= |A| / k, |A| = 200.
  assert [(a["variant"], a["k"]) for a in results["aggregates"]] == [("balagan", 5), ("k1", 1)]
  for run in results["runs"]:
    assert os.path.isdir(tmp_path / f"seed{run['seed']}" / f"B40_{run['variant']}")
    assert math.isfinite(run["fid_a_to_b_domain"])
    assert run["rise_fid_a_to_b_domain"] == 0  # the largest |B| is the reference
  assert [a["fid_a_to_b_domain"]["n"] for a in results["aggregates"]] == [2, 2]
  anchors = results["anchors"]
  # The shared features tell painted digits from grey ones.
  assert (anchors["real_target_images"]["fid_a_to_b_domain"]
          < anchors["untranslated_sources"]["fid_a_to_b_domain"])
  table = balagan_target_size.format_results(results)
  assert "FID BalaGAN" in table and "FID k=1" in table and "-- per seed" in table
  json.dumps(results)  # results.json must be writable as is


def test_balagan_rises_are_taken_per_seed_and_tabled_as_mean_and_std():
  fids = {(0, 1000): 10.0, (0, 125): 14.0, (1, 1000): 20.0, (1, 125): 22.0}
  runs = [{"seed": seed, "target_size": size, "variant": variant, "k": k,
           "fid_a_to_b_domain": fid + (variant == "k1"), "wall_s": 1.0}
          for (seed, size), fid in fids.items()
          for variant, k in (("balagan", 3 if size == 1000 else 18), ("k1", 1))]
  balagan_target_size.add_rises(runs, ["domain"])
  rises = [r["rise_fid_a_to_b_domain"] for r in runs if r["variant"] == "balagan"]
  assert rises == [0, 4, 0, 2]  # per seed: 14 - 10 and 22 - 20
  keys = ("fid_a_to_b_domain", "rise_fid_a_to_b_domain")
  results = {"seeds": [0, 1], "num_source": 2250, "num_steps": 3, "batch_size": 8,
             "encoder_steps": 2, "num_fid_samples": 875, "features": ["domain"], "runs": runs,
             "anchors": {"untranslated_sources": {keys[0]: 50.0},
                         "real_target_images": {keys[0]: 1.0}},
             "aggregates": common.aggregate(runs, ("target_size", "variant", "k"), keys)}
  table = balagan_target_size.format_results(results)
  # |B| 125: FIDs 14 and 22 (mean 18, std 5.657), rises 4 and 2 (3, 1.414).
  assert "125        18  18.000 ± 5.657  19.000 ± 5.657  3.000 ± 1.414  3.000 ± 1.414" in table


def test_balagan_benchmark_keeps_its_held_out_digits_unseen(tmp_path):
  with pytest.raises(ValueError, match="overlap the held-out"):
    balagan_target_size.run_benchmark(tiny_balagan_config(), str(tmp_path), sizes=(1001,))
  with pytest.raises(ValueError, match=r"config.data.source: kind 'embedded_mnist', split "
                                       r"'train\[:200\]'"):
    balagan_target_size.run_benchmark(balagan_tiny.tiny_config(), str(tmp_path), sizes=(20,))


@pytest.mark.slow
@pytest.mark.parametrize("script, header", [("jdbw_batch_weight.py", "match x->y"),
                                            ("balagan_target_size.py", "FID BalaGAN")])
def test_quick_run_prints_its_table(tmp_path, script, header):
  out = subprocess.run(
      [sys.executable, os.path.join(QUALITY_DIR, script), "--quick", f"--workdir={tmp_path}"],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=1200, check=True).stdout
  assert header in out
  assert (tmp_path / common.RESULTS_FILE).exists()


@pytest.fixture(scope="module")
def judged_balagan_run(tmp_path_factory):
  """A 2-step tiny BalaGAN run on the demo's digits, evaluated once (its judge saved)."""
  config = tiny_balagan_config()
  config.update_from_flattened_dict({"num_steps": 2, "eval_every": 2, "num_eval": 24,
                                     "eval.batch_size": 12})
  workdir = str(tmp_path_factory.mktemp("judged") / "run")
  balagan_train.train_and_evaluate(config, workdir)
  return config, workdir


def test_judge_check_reproduces_the_runs_class_match_and_checks_the_judge(judged_balagan_run):
  _, workdir = judged_balagan_run
  results, grid = balagan_judge_check.check(workdir, None, judge_seeds=2)

  logged = writers.read_event_scalars(os.path.join(workdir, "tensorboard"))
  assert results["class_match"] == pytest.approx(logged["eval/class_match_a_to_b"][-1][1])
  # The run's judge was trained with seed config.seed = 0 on the same batches.
  assert results["class_match_retrained_judges"]["values"][0] == results["class_match"]
  per_class = results["per_source_class"].values()
  assert sum(c["n"] for c in per_class) == 24
  assert sum(c["n"] * c["class_match"] for c in per_class) == pytest.approx(
      24 * results["class_match"])
  assert all(sum(c["read_as"]) == c["n"] for c in per_class)
  on_test = results["judge_on_500_test_digits_in_b_colours"]
  assert set(on_test) == {"clean", "noise 0.1", "noise 0.2", "noise 0.3", "blur 0.5",
                          "blur 0.8", "shift 1px", "shift 2px"}
  assert all(0 <= v <= 1 for v in on_test.values())
  # Rows: sources and outputs of the misread translations (a 2-step translator
  # misreads many), each cell 32 px and a 2 px border.
  shown = min(round(24 * (1 - results["class_match"])), balagan_judge_check.MISREAD_SHOWN)
  assert shown and grid.shape == (2 * 34 + 2, shown * 34 + 2, 3)
  json.dumps(results)


def test_class_match_over_all_sources_reads_every_image_of_a_once(judged_balagan_run):
  config, workdir = judged_balagan_run
  source = domains.domain_source(config.data.source)
  order = common.every_record(config.data.source, balagan_class_match.SOURCE_SEED)
  np.testing.assert_array_equal(np.bincount(order["label"], minlength=10),
                                np.bincount(sources.source_labels(source), minlength=10))

  result = balagan_class_match.class_match_all_sources(workdir, None, reference_draws=2)
  assert result["num_sources"] == len(source) == 200 and result["step"] == 2
  per_draw = result["class_match_per_draw"]
  assert len(per_draw) == 2 and all(0 <= v <= 1 for v in per_draw)
  assert all(v * 200 == pytest.approx(round(v * 200)) for v in per_draw)  # of 200 images
  assert result["class_match"] == pytest.approx(np.mean(per_draw))


def test_gaussian_blur_keeps_constants_and_spreads_a_point():
  constant = np.full((1, 9, 9, 3), 0.3)
  np.testing.assert_allclose(balagan_judge_check.gaussian_blur(constant, 0.8), constant)
  point = np.zeros((1, 9, 9, 1))
  point[0, 4, 4] = 1.0
  blurred = balagan_judge_check.gaussian_blur(point, 0.8)
  assert blurred.sum() == pytest.approx(1.0)
  assert 0 < blurred[0, 4, 4, 0] < 1 and blurred[0, 4, 5, 0] == pytest.approx(blurred[0, 5, 4, 0])

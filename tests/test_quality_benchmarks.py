"""The quality benchmarks (benchmarks/quality/) on tiny runs: plumbing, tables, results.

The default tests shrink each benchmark's --quick config to a few steps of tiny
networks; the slow ones run the scripts as a user would, with --quick.
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

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUALITY_DIR = os.path.join(REPO_ROOT, "benchmarks", "quality")
sys.path.insert(0, QUALITY_DIR)  # The scripts import their `common` module by name.

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
  demo = balagan_target_size.build_config(quick=True, seed=0).data
  return balagan_tiny.tiny_config(**{
      "data.source.split": demo.source.split, "data.source.max_records": 200,
      "data.target.split": demo.target.split,
      "data.target.colorize_foreground": demo.target.colorize_foreground,
      "data.target.colorize_background": demo.target.colorize_background,
      "eval_every": 0, "eval.classifier_steps": 20, "eval.classifier_batch": 32,
      "eval.kid_subset_size": 100})


def test_rebalancing_targets_follow_the_sr_mnist_frequencies():
  expected = jdbw_batch_weight.rebalancing_targets(jdbw_batch_weight.build_config(True, 0))
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
  assert 0.1 < reach["share_x"] < 0.25 < reach["share_y"] < 0.5


def test_jdbw_benchmark_reports_rates_and_weight_shares(tmp_path):
  # Algorithm 1 only (its compilations are the JD-BW tests'); the quick run (slow
  # test) covers the scheme "none" too.
  config = tiny_jdbw_config()
  results = jdbw_batch_weight.run_benchmark(config, str(tmp_path), schemes=("two_sided",))
  run = results["runs"]["two_sided"]
  assert 0 <= run["class_match_x_to_y"] <= 1 and 0 <= run["class_match_y_to_x"] <= 1
  assert math.isfinite(run["fid_x_to_y_domain"]) and math.isfinite(run["fid_y_to_x_domain"])
  max_ratio = results["expected"]["two_sided_max_weight_ratio"]
  for side in ("x", "y"):
    assert sum(run[f"share_{side}"]) == pytest.approx(1.0, abs=1e-4)
    # Pair weights differ at most max_ratio times, so does a class's mean weight
    # from the batch's.
    for weight in filter(None, run[f"relative_weight_{side}"]):
      assert 1 / max_ratio - 1e-4 <= weight <= max_ratio + 1e-4
  table = jdbw_batch_weight.format_results(results)
  assert "match x->y" in table and "two_sided x" in table and "final per-class" in table
  path = common.write_results(str(tmp_path), results)
  assert json.load(open(path))["runs"]["two_sided"]["share_y"] == run["share_y"]


@pytest.mark.slow  # ~40 s of compiles (two translation steps); keeps CI within budget
def test_balagan_benchmark_reports_fid_per_variant(tmp_path):
  # One size only: the quick run (slow test) covers several.
  results = balagan_target_size.run_benchmark(tiny_balagan_config(), str(tmp_path),
                                              sizes=(40,))
  assert [row["target_size"] for row in results["rows"]] == [40]
  # The rule: the smallest k with |B| >= |A| / k, |A| = 200.
  assert [row["balagan"]["k"] for row in results["rows"]] == [5]
  assert [row["k1"]["k"] for row in results["rows"]] == [1]
  for row in results["rows"]:
    for variant in balagan_target_size.VARIANTS:
      assert math.isfinite(row[variant]["fid_a_to_b_domain"])
  anchors = results["anchors"]
  # The shared features tell painted digits from grey ones.
  assert (anchors["real_target_images"]["fid_a_to_b_domain"]
          < anchors["untranslated_sources"]["fid_a_to_b_domain"])
  table = balagan_target_size.format_results(results)
  assert "FID BalaGAN" in table and "FID k=1" in table
  json.dumps(results)  # results.json must be writable as is


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

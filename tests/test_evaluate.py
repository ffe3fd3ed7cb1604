"""Evaluation of both methods: periodic scores in training, evaluate_run and the CLI."""

import json
import math
import os
import shutil

import ml_collections
import numpy as np
import pytest
from absl.testing import flagsaver

import jdbw_tiny
from balagan_jax import evaluate as balagan_evaluate
from balagan_jax import train as balagan_train
from balagan_tiny import tiny_config as balagan_tiny_config
from configs import balagan_digits_demo
from i2i_jax import errors
from i2i_jax.data import domains, sources
from i2i_jax.evaluation import evaluators, metrics
from i2i_jax.training import writers
from jdbw_jax import default_config as jdbw_default_config
from jdbw_jax import evaluate as jdbw_evaluate
from jdbw_jax import train as jdbw_train


@pytest.fixture(scope="module")
def jdbw_run(tmp_path_factory):
  """Two JD-BW steps evaluated at the end; 32 samples in batches of 20 (one padded)."""
  config = jdbw_tiny.tiny_config(**{"num_steps": 2, "eval_every": 2, "checkpoint_every": 2,
                                    "sample_every": 0, "eval.batch_size": 20})
  workdir = str(tmp_path_factory.mktemp("jdbw"))
  jdbw_train.train_and_evaluate(config, workdir)
  return workdir


@pytest.fixture(scope="module")
def balagan_run(tmp_path_factory):
  config = balagan_tiny_config(**{
      "num_steps": 2, "eval_every": 2, "sample_every": 0, "num_eval": 12,
      "eval.classifier_steps": 2, "eval.classifier_batch": 16, "eval.batch_size": 8,
      "eval.diversity_sources": 3, "eval.diversity_references": 4})
  workdir = str(tmp_path_factory.mktemp("balagan"))
  balagan_train.train_and_evaluate(config, workdir)
  return workdir


def assert_scores_valid(scores, expected_keys):
  assert expected_keys <= set(scores), sorted(scores)
  for key, value in scores.items():
    assert math.isfinite(value), (key, value)
    if key.startswith(("class_match", "classifier_acc")):
      assert 0 <= value <= 1, (key, value)
    if key.startswith(("fid", "kid_std", "diversity")):
      assert value >= 0, (key, value)


# No kid_std: the fixtures' KID subsets hold every sample (see the KID spread test).
JDBW_KEYS = {f"{metric}_{direction}_domain" for metric in ("fid", "kid")
             for direction in ("x_to_y", "y_to_x")} | {
                 "class_match_x_to_y", "class_match_y_to_x", "classifier_acc_x",
                 "classifier_acc_y"}
BALAGAN_KEYS = {"fid_a_to_b_domain", "kid_a_to_b_domain", "diversity_a_to_b_domain",
                "class_match_a_to_b", "classifier_acc_b"}


def test_jdbw_training_writes_eval_scalars(jdbw_run):
  scalars = writers.read_event_scalars(os.path.join(jdbw_run, "tensorboard"))
  assert {f"eval/{k}" for k in JDBW_KEYS} <= set(scalars), sorted(scalars)


def test_jdbw_evaluate_run_writes_metrics_and_grids(jdbw_run):
  results = jdbw_evaluate.evaluate_run(jdbw_run, num_eval=24)
  directory = os.path.join(jdbw_run, "eval", "step_0000002")
  assert results["output_dir"] == directory and results["step"] == 2
  with open(os.path.join(directory, "metrics.json")) as f:
    assert json.load(f) == results
  assert results["num_eval"] == 24
  assert "classifier_y.msgpack" in results["features"]["domain"]
  assert_scores_valid(results["metrics"], JDBW_KEYS)
  for grid in ("x_to_y", "y_to_x", "x_to_y_fixed_noise", "y_to_x_fixed_noise"):
    assert os.path.getsize(os.path.join(directory, f"{grid}.png")) > 0


def test_jdbw_evaluate_cli_prints_the_json(jdbw_run, tmp_path, capsys):
  evaluators.define_flags()
  output = str(tmp_path / "out")
  with flagsaver.flagsaver(workdir=jdbw_run, step=2, output=output, num_eval=16,
                           inception_weights=""):
    jdbw_evaluate.main(["evaluate"])
  printed = json.loads(capsys.readouterr().out)
  assert printed["output_dir"] == output and printed["num_eval"] == 16
  assert printed["features"]["inception"].startswith("off")
  with open(os.path.join(output, "metrics.json")) as f:
    assert json.load(f) == printed


def test_jdbw_unlabelled_run_without_inception_has_nothing_to_score(jdbw_run, tmp_path):
  workdir = str(tmp_path / "unlabelled")
  shutil.copytree(jdbw_run, workdir)
  with open(os.path.join(workdir, "config.json")) as f:
    config = json.load(f)
  config["data"]["num_classes"] = 0
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump(config, f)
  with pytest.raises(errors.ConfigError, match="unlabelled"):
    jdbw_evaluate.evaluate_run(workdir)


def test_balagan_training_writes_eval_scalars(balagan_run):
  scalars = writers.read_event_scalars(os.path.join(balagan_run, "tensorboard"))
  assert {f"eval/{k}" for k in BALAGAN_KEYS} <= set(scalars), sorted(scalars)
  assert os.path.exists(os.path.join(balagan_run, "eval_classifier.msgpack"))


def test_balagan_evaluate_run_writes_metrics_and_grids(balagan_run, tmp_path):
  results = balagan_evaluate.evaluate_run(balagan_run, step=2, output_dir=str(tmp_path))
  with open(tmp_path / "metrics.json") as f:
    assert json.load(f) == results
  assert results["step"] == 2 and results["num_eval"] == 12
  assert results["features"]["diversity"] == "3 sources x 4 references"
  assert_scores_valid(results["metrics"], BALAGAN_KEYS)
  for grid in ("translation", "reference_grid"):
    assert os.path.getsize(tmp_path / f"{grid}.png") > 0


def channel_means(images):
  """A stand-in feature extractor: the mean of each channel."""
  return images.mean((1, 2))


def test_real_features_score_equal_sets_as_zero_and_shifted_as_far():
  rng = np.random.default_rng(0)
  real = rng.uniform(-1, 1, (40, 4, 4, 3)).astype(np.float32)
  real_features = evaluators.RealFeatures(real, {"mean": channel_means}, kid_subset_size=1000,
                                          batch_size=16)
  same = real_features.score(real, "a_to_b")
  shifted = real_features.score(np.clip(real + 0.5, -1, 1), "a_to_b")
  assert abs(same["fid_a_to_b_mean"]) < 1e-6
  assert shifted["fid_a_to_b_mean"] > 0.1 and shifted["kid_a_to_b_mean"] > same["kid_a_to_b_mean"]
  grouped = np.stack([real[:5], np.repeat(real[:1], 5, 0)])  # (2 sources, 5 references)
  diversity = real_features.diversity(grouped, "a_to_b")["diversity_a_to_b_mean"]
  only_first = real_features.diversity(grouped[:1], "a_to_b")["diversity_a_to_b_mean"]
  np.testing.assert_allclose(diversity, only_first / 2, rtol=1e-5)  # the copies add 0


@pytest.mark.parametrize("subset_size, num_fake", [(1000, 40), (40, 40), (10, 40), (1000, 30)])
def test_real_features_report_a_kid_spread_only_where_the_subsets_differ(subset_size,
                                                                         num_fake):
  rng = np.random.default_rng(1)
  real = rng.uniform(-1, 1, (40, 4, 4, 3)).astype(np.float32)
  fake = np.clip(real[:num_fake] + rng.normal(0, 0.3, real[:num_fake].shape), -1, 1)
  scores = evaluators.RealFeatures(real, {"mean": channel_means}, kid_subset_size=subset_size,
                                   batch_size=16).score(fake, "a_to_b")
  # Subsets of every sample of two sets of 40 are the same two sets each time; with 10
  # of 40, or 30 of the 40 real ones, they differ.
  if subset_size >= 40 and num_fake == 40:
    assert "kid_std_a_to_b_mean" not in scores
    # Scored on one subset: the mean of 100 identical ones.
    every_subset, _ = metrics.kid(channel_means(real), channel_means(fake),
                                  subset_size=subset_size)
    assert scores["kid_a_to_b_mean"] == pytest.approx(every_subset, rel=1e-5, abs=1e-9)
  else:
    assert scores["kid_std_a_to_b_mean"] > 0
  assert math.isfinite(scores["kid_a_to_b_mean"])


def test_in_batches_pads_the_last_batch_and_trims_the_outputs():
  shapes = []

  def fn(a, b):
    shapes.append(a.shape)
    return a + b, a * 2

  a, b = np.arange(7.0), np.ones(7)
  total, doubled = evaluators.in_batches(fn, (a, b), batch_size=3)
  np.testing.assert_array_equal(total, a + 1)
  np.testing.assert_array_equal(doubled, a * 2)
  assert shapes == [(3,)] * 3


def test_fill_missing_adds_new_fields_and_keeps_the_runs():
  saved = json.loads(jdbw_default_config.get_config().to_json())
  del saved["eval"]["inception_weights"]
  saved["eval"]["classifier_steps"] = 7
  filled = evaluators.fill_missing(ml_collections.ConfigDict(saved),
                                   jdbw_default_config.get_config())
  assert filled.eval.inception_weights == "" and filled.eval.classifier_steps == 7


@pytest.mark.parametrize("judge_max_records, expected", [(-1, 200), (500, 500), (0, 2250)])
def test_the_judge_learns_from_b_or_the_labelled_set_b_is_capped_from(judge_max_records,
                                                                       expected):
  """The demo's B is 200 of 2,250 labelled digits (train[50%:]); its translator sees
  the 200 whatever the judge learns from."""
  config = balagan_digits_demo.get_config()
  config.eval.judge_max_records = judge_max_records
  judge_data = domains.build_source(balagan_evaluate.judge_domain(config))
  assert len(judge_data) == expected
  assert len(domains.build_source(config.data.target)) == 200
  labels = np.unique(sources.source_labels(judge_data))
  np.testing.assert_array_equal(labels, np.arange(10))

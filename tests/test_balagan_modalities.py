"""BalaGAN stage 1 on the embedded digits: encoder training, embeddings, modalities."""

import copy
import json
import logging
import os
import shutil
import time

import jax
import numpy as np
import pytest
from PIL import Image

from balagan_jax import clustering, encoder, modalities
from i2i_jax.data import domains, pipeline, sources
from i2i_jax.errors import ConfigError
from i2i_jax.evaluation import metrics
from i2i_jax.training import writers

from balagan_tiny import NUM_SOURCE, NUM_TARGET, tiny_config


def checkpoint_steps(workdir) -> list[int]:
  directory = os.path.join(workdir, "encoder", "checkpoints")
  return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


@pytest.fixture(scope="module")
def clustered(tmp_path_factory):
  """One end-to-end "clusters" run, shared by the tests that inspect it."""
  config = tiny_config()
  workdir = str(tmp_path_factory.mktemp("clusters"))
  return config, workdir, modalities.find_modalities(config, workdir)


def test_clusters_end_to_end_writes_assignment_summary_and_grid(clustered):
  config, workdir, mods = clustered
  k = clustering.choose_k(NUM_SOURCE, NUM_TARGET)
  assert (mods.k_source, mods.k_target, mods.num_modalities) == (k, 1, k + 1) == (5, 1, 6)
  assert mods.source_labels.shape == (NUM_SOURCE,) and mods.source_labels.dtype == np.int32
  assert mods.source_labels.min() >= 0 and mods.source_labels.max() < k
  np.testing.assert_array_equal(mods.target_labels, np.full(NUM_TARGET, k))
  assert mods.method == "clusters"

  out = os.path.join(workdir, "modalities")
  loaded = modalities.Modalities.load(os.path.join(out, "assignment.npz"))
  np.testing.assert_array_equal(loaded.source_labels, mods.source_labels)
  np.testing.assert_array_equal(loaded.target_labels, mods.target_labels)
  with open(os.path.join(out, "summary.json")) as f:
    summary = json.load(f)
  assert summary["k_source"] == k and summary["method"] == "clusters"
  assert sum(summary["source_sizes"]) == NUM_SOURCE and summary["target_sizes"] == [NUM_TARGET]
  assert summary["source_sizes"] == np.bincount(mods.source_labels, minlength=k).tolist()

  grid = np.asarray(Image.open(os.path.join(out, "clusters.png")))
  cell, pad = 32, 2  # one row of grid_samples images per modality
  assert grid.shape == ((cell + pad) * (k + 1) + pad, (cell + pad) * 4 + pad, 3)
  assert "modalities" in writers.read_event_image_tags(os.path.join(out, "tensorboard"))
  scalars = writers.read_event_scalars(os.path.join(workdir, "encoder", "tensorboard"))
  assert [step for step, _ in scalars["loss"]] == [1, 2, 3]
  assert all(np.isfinite(v) for _, v in scalars["loss"])
  assert checkpoint_steps(workdir)[-1] == config.encoder.num_steps


def _raw_pixels(source) -> np.ndarray:
  """The tiny config's evaluation images, flattened, built by hand: digits zero-padded
  28 -> 32, grey repeated to RGB, in [-1, 1]."""
  images = np.stack([source[i]["image"] for i in range(len(source))])
  padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0))).repeat(3, axis=-1)
  return padded.reshape(len(source), -1).astype(np.float32) / 127.5 - 1.0


def test_clusters_of_labelled_digits_are_scored_against_a_raw_pixel_baseline(clustered):
  config, workdir, mods = clustered
  with open(os.path.join(workdir, "modalities", "summary.json")) as f:
    quality = json.load(f)["quality"]
  source = domains.build_source(config.data.source)
  digits = sources.source_labels(source)
  assert quality["labels"] == {"num_images": NUM_SOURCE, "num_classes": 10}
  assert quality["learned"] == pytest.approx(metrics.clustering_scores(mods.source_labels,
                                                                       digits))
  # The baseline: the same k-means call (k, iterations, restarts, key) on the pixels.
  key = jax.random.fold_in(jax.random.key(config.seed), modalities._KMEANS_SALT * 1000)
  _, raw = clustering.spherical_kmeans(key, _raw_pixels(source), mods.k_source,
                                       num_iters=config.modalities.kmeans_iters,
                                       num_restarts=config.modalities.kmeans_restarts)
  assert quality["raw_pixels"] == pytest.approx(metrics.clustering_scores(np.asarray(raw),
                                                                          digits))
  for scores in (quality["learned"], quality["raw_pixels"]):
    assert set(scores) == {"nmi", "ari", "purity"}
    assert 0 < scores["nmi"] < 1 and 0.1 <= scores["purity"] <= 1


def test_quality_is_scored_on_the_labelled_images_only():
  config = tiny_config()
  images, digits = sources.load_embedded_mnist()
  partly = digits[:60].copy()
  partly[::3] = sources.NO_LABEL
  source = sources.ArraySource(images[:60], partly)
  mods = modalities.Modalities(np.arange(60) % 4, np.full(5, 4), 4, 1)
  quality = modalities.clustering_quality(config, mods, (source, None))
  kept = partly >= 0
  assert quality["labels"] == {"num_images": 40, "num_classes": 10}
  assert quality["learned"] == metrics.clustering_scores(mods.source_labels[kept],
                                                         partly[kept])


@pytest.mark.parametrize("labels", [None, np.zeros(60, int)], ids=["unlabelled", "one_class"])
def test_no_quality_without_labels_of_two_classes(labels):
  source = sources.ArraySource(sources.load_embedded_mnist()[0][:60], labels)
  mods = modalities.Modalities(np.arange(60) % 4, np.full(5, 4), 4, 1)
  assert modalities.clustering_quality(tiny_config(), mods, (source, None)) is None


def test_clusters_of_an_unlabelled_source_have_no_quality_block(tmp_path):
  folder = tmp_path / "unlabelled"
  folder.mkdir()
  rng = np.random.default_rng(0)
  for i in range(12):
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
  config = tiny_config(**{"modalities.k_source": 2})
  config.data.source.kind = "folder"
  config.data.source.path = str(folder)
  config.data.source.split = "all"
  mods = modalities.find_modalities(config, str(tmp_path / "run"))
  with open(tmp_path / "run" / "modalities" / "summary.json") as f:
    summary = json.load(f)
  assert "quality" not in summary
  assert summary["method"] == "clusters" and summary["source_sizes"] == mods.sizes()[:2].tolist()


def test_second_call_loads_instead_of_retraining(clustered):
  config, workdir, mods = clustered
  assignment = os.path.join(workdir, "modalities", "assignment.npz")
  mtime, steps = os.path.getmtime(assignment), checkpoint_steps(workdir)
  more = tiny_config(**{"encoder.num_steps": 6})  # would train further if it did not load
  again = modalities.find_modalities(more, workdir)
  np.testing.assert_array_equal(again.source_labels, mods.source_labels)
  np.testing.assert_array_equal(again.target_labels, mods.target_labels)
  assert (again.k_source, again.k_target) == (mods.k_source, mods.k_target)
  assert checkpoint_steps(workdir) == steps
  assert os.path.getmtime(assignment) == mtime


def test_balanced_setting_reuses_the_finished_encoder(clustered, tmp_path):
  """k_target > 1 clusters B too; the encoder of the copied run is restored, not retrained."""
  _, workdir, _ = clustered
  copy = str(tmp_path / "balanced")
  shutil.copytree(workdir, copy)
  os.remove(os.path.join(copy, "modalities", "assignment.npz"))
  steps = checkpoint_steps(copy)
  mods = modalities.find_modalities(
      tiny_config(**{"modalities.k_source": 3, "modalities.k_target": 2}), copy)
  assert (mods.k_source, mods.k_target) == (3, 2)
  assert set(np.unique(mods.source_labels)) <= {0, 1, 2}
  assert set(np.unique(mods.target_labels)) <= {3, 4}
  assert checkpoint_steps(copy) == steps


def test_embeddings_are_unit_norm_and_per_image(clustered):
  config, workdir, _ = clustered
  variables = encoder.train_encoder(config, workdir)  # finished: restored only
  batch = pipeline.fixed_batch(config.data.source, 21, seed=0)["image"]
  emb = encoder.embed(variables, config, batch)  # 21: not a multiple of the batch (16)
  assert emb.shape == (21, config.encoder.width * 2)  # h of a two-stage encoder
  np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
  # Eval mode: an image's embedding does not depend on the rest of its batch.
  np.testing.assert_allclose(encoder.embed(variables, config, batch[:3]), emb[:3], atol=1e-5)
  # Grey images are repeated to RGB.
  grey = encoder.embed(variables, config, batch[:3, ..., :1])
  np.testing.assert_allclose(grey, emb[:3], atol=1e-5)
  # config.modalities.features="projection" clusters z instead of h.
  config = copy.deepcopy(config)
  config.modalities.features = "projection"
  z = encoder.embed(variables, config, batch[:3])
  assert z.shape == (3, config.encoder.projection_dim)
  np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-5)
  config.modalities.features = "pixels"
  with pytest.raises(ConfigError, match="modalities.features 'pixels'"):
    encoder.embed(variables, config, batch[:3])


def test_domain_is_read_in_record_order_without_random_geometry():
  config = tiny_config()
  source = domains.build_source(config.data.source)
  seen = np.zeros(len(source), int)
  for idx, batch in pipeline.records_in_order(config.data.source, source, 48, seed=3):
    seen[idx] += 1  # 200 = 4 * 48 + 8: the dropped remainder comes in a second pass
    for i, image in zip(idx, batch):
      raw = source[int(i)]["image"].astype(np.float32) / 127.5 - 1.0  # (28, 28, 1)
      np.testing.assert_allclose(image[2:30, 2:30], np.repeat(raw, 3, axis=-1), atol=1e-6)
  np.testing.assert_array_equal(seen, 1)


def test_encoder_resume_continues_from_the_checkpoint(tmp_path, caplog):
  straight = encoder.train_encoder(tiny_config(**{"encoder.num_steps": 4}),
                                   str(tmp_path / "straight"))
  workdir = str(tmp_path / "resumed")
  encoder.train_encoder(tiny_config(**{"encoder.num_steps": 2}), workdir)
  assert checkpoint_steps(workdir) == [2]
  # tensorboardX names event files by the second: let the second run get its own file.
  time.sleep(1.05)
  with caplog.at_level(logging.INFO):
    resumed = encoder.train_encoder(tiny_config(**{"encoder.num_steps": 4}), workdir)
  assert "resumed from step 2 of 4" in caplog.text
  assert checkpoint_steps(workdir) == [2, 4]
  # Steps 1-2 were logged by the first run and 3-4 by the second: none twice.
  scalars = writers.read_event_scalars(os.path.join(workdir, "encoder", "tensorboard"))
  assert sorted(step for step, _ in scalars["loss"]) == [1, 2, 3, 4]
  # Same data positions and augmentation keys: identical to the uninterrupted run.
  for a, b in zip(jax.tree_util.tree_leaves(straight), jax.tree_util.tree_leaves(resumed)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_labels_ablation_gives_the_digit_labels(tmp_path):
  config = tiny_config(**{"modalities.assignment": "labels"})
  mods = modalities.find_modalities(config, str(tmp_path))
  digits = sources.source_labels(domains.build_source(config.data.source))
  np.testing.assert_array_equal(mods.source_labels, digits)
  assert (mods.k_source, mods.k_target) == (10, 1)
  np.testing.assert_array_equal(mods.target_labels, np.full(NUM_TARGET, 10))
  assert not os.path.exists(tmp_path / "encoder")  # no encoder for the ablation
  assert os.path.exists(tmp_path / "modalities" / "clusters.png")


def test_labels_ablation_without_labels_names_the_domain(tmp_path):
  folder = tmp_path / "unlabelled"
  folder.mkdir()
  for i in range(3):
    Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(folder / f"{i}.png")
  config = tiny_config(**{"modalities.assignment": "labels"})
  config.data.source.kind = "folder"
  config.data.source.path = str(folder)
  config.data.source.split = "all"
  with pytest.raises(ValueError, match=r"source domain \(folder .*unlabelled"):
    modalities.find_modalities(config, str(tmp_path / "run"))


def test_assignment_file_is_read_and_checked(tmp_path):
  path = tmp_path / "modalities_file.npz"
  source = np.arange(NUM_SOURCE) % 4 * 3  # labels 0, 3, 6, 9: renumbered to 0..3
  np.savez(path, source=source, target=np.arange(NUM_TARGET) % 2)
  mods = modalities.find_modalities(tiny_config(**{"modalities.assignment": str(path)}),
                                    str(tmp_path / "run"))
  np.testing.assert_array_equal(mods.source_labels, source // 3)
  np.testing.assert_array_equal(mods.target_labels, 4 + np.arange(NUM_TARGET) % 2)
  assert (mods.k_source, mods.k_target) == (4, 2)

  bad = tmp_path / "too_short.npz"
  np.savez(bad, source=np.zeros(NUM_SOURCE - 1, int))
  with pytest.raises(ValueError, match=rf"too_short\.npz.*{NUM_SOURCE - 1}.*{NUM_SOURCE}"):
    modalities.find_modalities(tiny_config(**{"modalities.assignment": str(bad)}),
                               str(tmp_path / "run_bad"))


def test_modalities_round_trip_and_validation(tmp_path):
  mods = modalities.Modalities(np.array([0, 2, 1]), np.array([3, 4]), 3, 2, "test")
  mods.save(tmp_path / "a.npz")
  loaded = modalities.Modalities.load(tmp_path / "a.npz")
  np.testing.assert_array_equal(loaded.source_labels, mods.source_labels)
  np.testing.assert_array_equal(loaded.target_labels, mods.target_labels)
  assert loaded.summary() == mods.summary()
  assert loaded.sizes().tolist() == [1, 1, 1, 1, 1]
  with pytest.raises(ValueError, match="target labels"):
    modalities.Modalities(np.array([0]), np.array([0]), 1, 1)

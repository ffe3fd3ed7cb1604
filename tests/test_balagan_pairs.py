"""BalaGAN's content and reference streams: how often each modality is drawn."""

import itertools

import numpy as np
import pytest

from balagan_jax import evaluate, modalities, train
from balagan_tiny import tiny_config
from i2i_jax.errors import ConfigError

# Two source modalities of very different size, plus the target: 200 + 1,800 + 400.
SIZES = np.array([200, 1800, 400])
BATCH = 48


def _imbalanced(**overrides):
  config = tiny_config(**{"data.source.split": "train[:2000]",
                          "data.target.split": "train[2000:2400]", "batch_size": BATCH,
                          **overrides})
  source_labels = (np.arange(SIZES[:2].sum()) >= SIZES[0]).astype(np.int32)
  mods = modalities.Modalities(source_labels, np.full(SIZES[2], 2), k_source=2, k_target=1)
  return config, mods


def _drawn_labels(stream, num_batches: int) -> np.ndarray:
  return np.concatenate([batch["label"] for batch in itertools.islice(stream, num_batches)])


@pytest.mark.parametrize("pair_sampling", ["images", "modalities"])
def test_each_stream_draws_modalities_by_the_configured_sampling(pair_sampling):
  config, mods = _imbalanced(pair_sampling=pair_sampling)
  streams = train.make_streams(config, train.modality_union(config, mods),
                               modalities.num_training_modalities(config, mods))
  expected = (SIZES / SIZES.sum() if pair_sampling == "images"
              else np.full(len(SIZES), 1 / len(SIZES)))
  num_draws = SIZES.sum()
  # "modalities" draws one table as long as the union (`ClassResampledSource`) and reads
  # it epoch after epoch, so its frequencies spread like those of that many independent
  # draws however many batches are read; "images" reads each record once an epoch.
  tolerance = 4 * np.sqrt(expected * (1 - expected) / num_draws)
  drawn = {name: _drawn_labels(stream, num_draws // BATCH) for name, stream in streams.items()}
  for name, labels in drawn.items():
    frequency = np.bincount(labels, minlength=len(SIZES)) / len(labels)
    np.testing.assert_array_less(np.abs(frequency - expected), tolerance, err_msg=name)
  # Independent seeds: the two streams are different sequences.
  assert (drawn["content"] != drawn["reference"]).mean() > 0.2


def test_images_is_the_default_and_unknown_values_name_the_field():
  assert tiny_config().pair_sampling == "images"
  config, mods = _imbalanced(pair_sampling="clusters")
  with pytest.raises(ConfigError, match=r"config\.pair_sampling 'clusters'.*'images', "
                                        r"'modalities'"):
    train.make_streams(config, train.modality_union(config, mods), mods.num_modalities)
  with pytest.raises(ConfigError, match="pair_sampling"):
    train.train_and_evaluate(config, "/nonexistent/never/created")


def test_evaluation_classifier_batches_stay_uniform_over_modalities():
  config, mods = _imbalanced(**{"eval.classifier_batch": BATCH})
  labels = _drawn_labels(evaluate.modality_batches(config, mods), SIZES.sum() // BATCH)
  expected = 1 / len(SIZES)
  frequency = np.bincount(labels, minlength=len(SIZES)) / len(labels)
  np.testing.assert_array_less(np.abs(frequency - expected),
                               4 * np.sqrt(expected * (1 - expected) / SIZES.sum()))

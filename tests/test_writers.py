"""MetricWriter writes TensorBoard events that the bundled reader reads back."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from i2i_jax.training import writers


def test_scalars_images_texts_round_trip(tmp_path):
  with writers.MetricWriter(tmp_path) as writer:
    writer.write_scalars(1, {"g_loss": 0.5, "lr": np.float32(2e-4)})
    writer.write_scalars(2, {"g_loss": jnp.array(0.25), "d_loss": np.array([1.5])})
    writer.write_images(2, {
        "samples/a2b": np.random.default_rng(0).random((3, 8, 8, 3)),  # NHWC float
        "grid": np.zeros((10, 12, 3), np.uint8),  # HWC uint8
        "grey": np.ones((2, 8, 8, 1), np.float32),  # 1 channel
    })
    writer.write_texts(3, {"note": "hello"})

  scalars = writers.read_event_scalars(tmp_path)
  assert scalars["g_loss"] == [(1, 0.5), (2, 0.25)]
  assert scalars["d_loss"] == [(2, 1.5)]
  assert scalars["lr"] == [(1, pytest.approx(2e-4))]
  assert writers.read_event_image_tags(tmp_path) == {"samples/a2b", "grid", "grey"}
  assert writers.read_event_texts(tmp_path)["note"] == [(3, "hello")]


def test_hparams_are_flattened_text(tmp_path):
  config = ml_collections.ConfigDict({"lr": 2e-4, "model": {"ch": 8, "norm": "instance"}})
  with writers.MetricWriter(tmp_path) as writer:
    writer.write_hparams(config)
  [(step, table)] = writers.read_event_texts(tmp_path)["hparams"]
  assert step == 0
  assert "| model.ch | 8 |" in table and "| model.norm | 'instance' |" in table


def test_disabled_writer_writes_nothing(tmp_path):
  with writers.MetricWriter(tmp_path / "off", enabled=False) as writer:
    writer.write_scalars(1, {"loss": 1.0})
    writer.write_images(1, {"x": np.zeros((4, 4, 3))})
    writer.flush()
  assert not (tmp_path / "off").exists()


def test_out_of_range_floats_are_clipped_not_wrapped():
  image = writers._nhwc_uint8("x", np.array([[[-0.5, 0.5, 1.01]]]))
  np.testing.assert_array_equal(image, [[[[0, 128, 255]]]])


@pytest.mark.parametrize("bad", [np.zeros((4, 4)), np.zeros((4, 4, 2)), np.zeros((1, 1, 4, 4, 3))])
def test_bad_image_shapes_are_rejected(tmp_path, bad):
  with writers.MetricWriter(tmp_path) as writer, pytest.raises(ValueError, match="'x'"):
    writer.write_images(0, {"x": bad})


def test_non_scalar_scalar_is_rejected(tmp_path):
  with writers.MetricWriter(tmp_path) as writer, pytest.raises(ValueError, match="'loss'"):
    writer.write_scalars(0, {"loss": np.zeros(3)})


def test_reader_stops_at_a_truncated_last_record(tmp_path):
  with writers.MetricWriter(tmp_path) as writer:
    writer.write_scalars(1, {"loss": 1.0})
    writer.write_scalars(2, {"loss": 2.0})
  [path] = tmp_path.glob("events.out.tfevents.*")
  path.write_bytes(path.read_bytes()[:-3])  # A writer still busy with the last record.
  assert writers.read_event_scalars(tmp_path) == {"loss": [(1, 1.0)]}

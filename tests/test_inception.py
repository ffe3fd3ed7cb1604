"""The FID Inception against pytorch-fid, and the torch-free checkpoint reader.

The fixtures in tests/data come from tools/make_tiny_inception_fixture.py (it
needs torch): a narrow (channels / 16) pytorch-fid network with random weights,
its features for a few images, and tensors saved in both torch.save formats.
"""

import collections
import io
import pathlib
import pickle
import zipfile

import numpy as np
import pytest

from i2i_jax.errors import CheckpointError
from i2i_jax.evaluation import inception, torch_checkpoint

DATA = pathlib.Path(__file__).parent / "data"
TINY_CHECKPOINT = DATA / "tiny_fid_inception.pth"


@pytest.fixture(scope="module")
def torch_case():
  with np.load(DATA / "tiny_fid_inception_features.npz") as npz:
    return {name: npz[name] for name in npz.files}


@pytest.fixture(scope="module")
def tiny_extractor(torch_case):
  return inception.inception_feature_extractor(
      TINY_CHECKPOINT, batch_size=4, width_divisor=int(torch_case["divisor"]),
      resize_to=int(torch_case["resize_to"]))


def _to_unit_range(images_u8):
  return images_u8.astype(np.float32) / 127.5 - 1


def test_tiny_network_matches_pytorch_fid_features(torch_case, tiny_extractor):
  expected = torch_case["features"]
  features = tiny_extractor(_to_unit_range(torch_case["images"]))
  assert features.shape == expected.shape == (4, inception.FEATURE_DIM // 16)
  # float32 round-off through ~50 layers: ~1e-5 of the feature scale.
  np.testing.assert_allclose(features, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_grey_images_are_repeated_to_rgb(torch_case, tiny_extractor):
  grey = _to_unit_range(torch_case["images"])[..., :1]
  np.testing.assert_array_equal(tiny_extractor(grey), tiny_extractor(np.repeat(grey, 3, -1)))


def test_resize_matches_torch_bilinear_downsampling(torch_case):
  """F.interpolate does not antialias; jax.image.resize would by default."""
  resized = inception.resize_bilinear(torch_case["downsample_input"].astype(np.float32), 9)
  np.testing.assert_allclose(resized, torch_case["downsample_output"], atol=1e-3)


def _expected_format_cases():
  base = np.arange(24, dtype=np.float32)
  return {
      "offset_view": base[2:14].reshape(3, 4),
      "transposed": base.reshape(4, 6).T,
      "float64": np.arange(6, dtype=np.float64).reshape(2, 3) / 4,
      "float16": np.arange(5, dtype=np.float16) / 2,
      "int64_scalar": np.array(7, np.int64),
      "int32": np.arange(-3, 3, dtype=np.int32),
      "uint8": np.arange(250, 256, dtype=np.uint8),
      "bool": np.array([True, False, True]),
      "empty": np.zeros((0, 3), np.float32),
  }


@pytest.mark.parametrize("name", ["torch_tensors_zip.pth", "torch_tensors_legacy.pth"])
def test_reads_both_torch_save_formats(name):
  arrays = torch_checkpoint.read_state_dict(DATA / name)
  expected = _expected_format_cases()
  assert list(arrays) == list(expected)
  for key, value in expected.items():
    assert arrays[key].dtype == value.dtype, key
    np.testing.assert_array_equal(arrays[key], value, err_msg=key)


def test_loader_maps_torch_names_and_layouts(torch_case):
  variables = inception.load_fid_inception_params(TINY_CHECKPOINT,
                                                  width_divisor=int(torch_case["divisor"]))
  arrays = torch_checkpoint.read_state_dict(TINY_CHECKPOINT)
  conv = variables["params"]["Mixed_6b"]["branch7x7_2"]["conv"]["kernel"]
  np.testing.assert_array_equal(
      conv, arrays["Mixed_6b.branch7x7_2.conv.weight"].transpose(2, 3, 1, 0))
  assert conv.shape == (1, 7, 8, 8)  # HWIO of a (1, 7) conv, 128 / 16 channels
  np.testing.assert_array_equal(variables["batch_stats"]["Conv2d_1a_3x3"]["bn"]["var"],
                                arrays["Conv2d_1a_3x3.bn.running_var"])


def test_loader_names_missing_unexpected_and_mismatched_keys(tmp_path):
  arrays = torch_checkpoint.read_state_dict(TINY_CHECKPOINT)
  with pytest.raises(CheckpointError, match=r"tiny_fid_inception\.pth.*shape mismatches: .*"
                     r"Conv2d_1a_3x3\.conv\.weight: \(2, 3, 3, 3\) \(expected \(32, 3, 3, 3\)\)"):
    inception.load_fid_inception_params(TINY_CHECKPOINT)  # the full width expects 32 filters
  del arrays["Mixed_7c.branch_pool.bn.running_mean"]
  arrays["AuxLogits.fc.weight"] = np.zeros(3)
  arrays["fc.weight"] = np.zeros(3)  # the classifier head is ignored
  broken = tmp_path / "broken.npz"
  np.savez(broken, **arrays)
  with pytest.raises(CheckpointError, match=r"broken\.npz.*missing keys: Mixed_7c\.branch_pool"
                     r"\.bn\.running_mean; unexpected keys: AuxLogits\.fc\.weight$"):
    inception.load_fid_inception_params(broken, width_divisor=16)


def test_reader_refuses_arbitrary_pickled_objects(tmp_path):
  """The reader unpickles no global but tensors' own, so a checkpoint cannot run code."""
  buffer = io.BytesIO()
  with zipfile.ZipFile(buffer, "w") as archive:
    archive.writestr("evil/data.pkl", pickle.dumps(collections.Counter(a=1)))
  path = tmp_path / "evil.pth"
  path.write_bytes(buffer.getvalue())
  with pytest.raises(CheckpointError, match=r"evil\.pth: unsupported object collections\.Counter"):
    torch_checkpoint.read_state_dict(path)


def test_missing_weights_file_says_where_to_get_it(tmp_path):
  with pytest.raises(CheckpointError, match="pt_inception-2015-12-05-6726825d.pth"):
    inception.load_fid_inception_params(tmp_path / "absent.pth")

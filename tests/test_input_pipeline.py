"""Domain pipelines: batch layout, stacking, resumable state (also through orbax), sharding."""

import itertools
import sys

import grain
import numpy as np
import orbax.checkpoint as ocp
import pytest
from absl import flags
from ml_collections import config_flags
from PIL import Image

import tiny_tfds_builder
from i2i_jax.data import domains, pipeline
from i2i_jax.data.transforms import skewed_class_probs


def _config(**overrides):
  cfg = domains.default_domain_config()
  cfg.update(overrides)
  return cfg


# Domains small enough are held in memory and read a batch at a time; the others
# (and cache_mb = 0) record by record. Both must keep the pipeline's contracts.
BOTH_READ_PATHS = pytest.mark.parametrize("cache_mb", [1024, 0], ids=["in_memory", "by_record"])


def _take(iterator, n):
  return list(itertools.islice(iterator, n))


def _assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x["image"], y["image"])
    np.testing.assert_array_equal(x["label"], y["label"])


@pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")  # config_flags' loader
def test_default_domain_config_takes_command_line_overrides(tmp_path, monkeypatch):
  cfg = domains.default_domain_config()
  assert cfg.kind == "embedded_mnist" and cfg.augment in pipeline.AUGMENTS
  assert cfg.class_probs is None
  cfg.class_probs = skewed_class_probs()  # Config files assign lists; the field keeps tuples.
  assert isinstance(cfg.class_probs, tuple) and len(cfg.class_probs) == 10
  config_file = tmp_path / "domain.py"
  config_file.write_text("from i2i_jax.data import domains\n"
                         "get_config = domains.default_domain_config\n")
  argv = ["prog", f"--config={config_file}", "--config.class_probs=(0.1, 0.9)",
          "--config.data_dir=/data/tfds", "--config.resize=150", "--config.label_key=",
          "--config.flip=true"]
  # As the entry points parse flags; config_flags finds the override names in sys.argv.
  monkeypatch.setattr(sys, "argv", argv)
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file("config", flag_values=flag_values, lock_config=True)
  flag_values(argv)
  cfg = flag_values.config
  assert cfg.class_probs == (0.1, 0.9) and cfg.data_dir == "/data/tfds"
  assert cfg.resize == 150 and cfg.label_key == "" and cfg.flip is True


def test_batches_shape_dtype_and_range():
  it = iter(pipeline.make_domain_dataset(_config(), batch_size=8, seed=0))
  batch = next(it)
  assert batch["image"].shape == (8, 32, 32, 1) and batch["image"].dtype == np.float32
  assert batch["label"].shape == (8,) and batch["label"].dtype == np.int32
  assert batch["image"].min() == -1.0 and batch["image"].max() == 1.0
  assert set(batch["label"]) <= set(range(10))
  rgb = next(iter(pipeline.make_domain_dataset(_config(channels=3), batch_size=4, seed=0)))
  assert rgb["image"].shape == (4, 32, 32, 3)
  np.testing.assert_array_equal(rgb["image"][..., 0], rgb["image"][..., 2])


@BOTH_READ_PATHS
def test_steps_per_call_stacks_consecutive_batches(cache_mb):
  cfg = _config(augment="sr_mnist", cache_mb=cache_mb)
  stacked = next(iter(pipeline.make_domain_dataset(cfg, batch_size=4, seed=1,
                                                   steps_per_call=3)))
  plain = _take(iter(pipeline.make_domain_dataset(cfg, batch_size=4, seed=1)), 3)
  assert stacked["image"].shape == (3, 4, 32, 32, 1) and stacked["label"].shape == (3, 4)
  for step in range(3):
    np.testing.assert_array_equal(stacked["image"][step], plain[step]["image"])


@BOTH_READ_PATHS
def test_class_probs_and_sr_mnist_pipeline(cache_mb):
  cfg = _config(split="train[50%:]", augment="sr_mnist", class_probs=skewed_class_probs(),
                cache_mb=cache_mb)
  batch = next(iter(pipeline.make_domain_dataset(cfg, batch_size=500, seed=0)))
  zeros = (batch["label"] == 0).mean()
  assert 0.43 < zeros < 0.57  # 0.5 within 3 binomial standard deviations.
  assert domains.build_source(cfg).num_classes == 10


@BOTH_READ_PATHS
def test_iterator_state_round_trip(cache_mb):
  cfg = _config(augment="sr_mnist", class_probs=skewed_class_probs(), cache_mb=cache_mb)
  it = iter(pipeline.make_domain_dataset(cfg, batch_size=4, seed=2, steps_per_call=2))
  _take(it, 3)
  state = it.get_state()
  expected = _take(it, 3)
  _take(it, 2)
  it.set_state(state)
  _assert_batches_equal(_take(it, 3), expected)


@BOTH_READ_PATHS
def test_iterator_position_survives_orbax_checkpoint(tmp_path, cache_mb):
  cfg = _config(augment="sr_mnist", cache_mb=cache_mb)
  make = lambda: iter(pipeline.make_domain_dataset(cfg, batch_size=4, seed=5))
  it = make()
  _take(it, 4)
  options = ocp.CheckpointManagerOptions(max_to_keep=1, create=True)
  with ocp.CheckpointManager(tmp_path / "ckpt", options=options) as manager:
    manager.save(4, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
    manager.wait_until_finished()
    expected = _take(it, 3)
    fresh = make()
    manager.restore(4, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(fresh)))
  _assert_batches_equal(_take(fresh, 3), expected)


@BOTH_READ_PATHS
@pytest.mark.parametrize("augment", ["pad", "sr_mnist"])
def test_hosts_read_blocks_of_the_one_host_global_batch(cache_mb, augment):
  # Host i's batch is block i of the batch one host reads: random geometry included,
  # so a multi-host run trains on exactly the batches of a single-host one.
  cfg = _config(split="test", augment=augment, cache_mb=cache_mb)
  shards = [_take(iter(pipeline.make_domain_dataset(
      cfg, batch_size=8, seed=0, shard_index=i, shard_count=2)), 10) for i in range(2)]
  single = _take(iter(pipeline.make_domain_dataset(
      cfg, batch_size=16, seed=0, shard_index=0, shard_count=1)), 10)
  joined = [{key: np.concatenate([b0[key], b1[key]]) for key in ("image", "label")}
            for b0, b1 in zip(*shards)]
  _assert_batches_equal(joined, single)


@BOTH_READ_PATHS
def test_eval_mode_is_one_pass(cache_mb):
  cfg = _config(split="test[:10%]", cache_mb=cache_mb)  # 50 records.
  batches = list(pipeline.make_domain_dataset(cfg, batch_size=8, seed=0, train=False))
  assert len(batches) == 6  # drop_remainder
  seen = {img.tobytes() for b in batches for img in b["image"]}
  assert len(seen) == 48


def test_small_domains_are_held_in_memory_and_read_by_batch():
  assert pipeline.held_in_memory(_config())
  assert pipeline.held_in_memory(_config(augment="sr_mnist", channels=3))
  assert not pipeline.held_in_memory(_config(cache_mb=0))
  assert not pipeline.held_in_memory(_config(cache_mb=1))  # 4,500 digits: 3.4 MB
  assert not pipeline.held_in_memory(_config(augment="resize_crop"))
  assert pipeline.num_workers(_config(), backend="gpu", cpu_count=16, in_memory=True) == 0
  # Each epoch visits every record once, in a fresh order: the records the
  # record-by-record path reads.
  cfg = _config(split="test[:10%]")  # 50 records; "pad": an image identifies its record.
  keys = lambda batches: [img.tobytes() for b in batches for img in b["image"]]
  stream = keys(_take(iter(pipeline.make_domain_dataset(cfg, batch_size=10, seed=0)), 10))
  first, second = stream[:50], stream[50:]
  assert len(set(first)) == 50 and set(first) == set(second) and first != second
  cfg.cache_mb = 0
  by_record = keys(_take(iter(pipeline.make_domain_dataset(cfg, batch_size=10, seed=0)),
                         5))
  assert set(by_record) == set(first)
  rgb = pipeline.fixed_batch(_config(channels=3, augment="sr_mnist"), 4)["image"]
  assert rgb.shape == (4, 32, 32, 3)
  np.testing.assert_array_equal(rgb[..., 0], rgb[..., 1])


@BOTH_READ_PATHS
def test_fixed_batch_is_deterministic_and_cycles_small_sources(cache_mb):
  cfg = _config(split="test[:1%]", augment="sr_mnist", cache_mb=cache_mb)  # 5 records.
  a = pipeline.fixed_batch(cfg, 12, seed=3)
  b = pipeline.fixed_batch(cfg, 12, seed=3)
  assert a["image"].shape == (12, 32, 32, 1) and a["label"].shape == (12,)
  _assert_batches_equal([a], [b])
  assert not np.array_equal(pipeline.fixed_batch(cfg, 12, seed=4)["image"], a["image"])


def test_configuration_errors_name_the_domain():
  with pytest.raises(ValueError, match="embedded_mnist split 'train' with augment 'none'.*"
                                       r"\(28, 28, 1\), expected \(32, 32, 1\)"):
    pipeline.make_domain_dataset(_config(augment="none"), batch_size=2, seed=0)
  with pytest.raises(ValueError, match="larger than 24x24"):
    pipeline.make_domain_dataset(_config(image_size=24), batch_size=2, seed=0)
  with pytest.raises(ValueError, match="unknown augment 'jitter'"):
    pipeline.make_domain_dataset(_config(augment="jitter"), batch_size=2, seed=0)
  with pytest.raises(ValueError, match="has no records"):
    pipeline.make_domain_dataset(_config(split="test[:0]"), batch_size=2, seed=0)


# ----------------------------------------------------------------------------- other sources

def test_folder_domain_with_resize_crop(tmp_path):
  rng = np.random.default_rng(0)
  for label, (mode, size) in enumerate([("RGB", (50, 37)), ("L", (41, 60)), ("RGBA", (45, 45))]):
    for i in range(4):
      shape = size[::-1] + {"RGB": (3,), "L": (), "RGBA": (4,)}[mode]
      image = Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode)
      (tmp_path / f"class{label}").mkdir(exist_ok=True)
      image.save(tmp_path / f"class{label}" / f"{i}.png")
  cfg = _config(kind="folder", path=str(tmp_path), split="all", image_size=24, channels=3,
                augment="resize_crop", resize=30, flip=True)
  batch = next(iter(pipeline.make_domain_dataset(cfg, batch_size=5, seed=0,
                                                 steps_per_call=2)))
  assert batch["image"].shape == (2, 5, 24, 24, 3) and batch["image"].dtype == np.float32
  assert set(batch["label"].ravel()) <= {0, 1, 2}
  assert domains.build_source(cfg).num_classes == 3
  cfg.channels = 1
  assert pipeline.fixed_batch(cfg, 3)["image"].shape == (3, 24, 24, 1)


def test_tfds_domain(tmp_path):
  data_dir = str(tmp_path)
  name = tiny_tfds_builder.prepare(data_dir)
  cfg = _config(kind="tfds", name=name, data_dir=data_dir, split="train",
                class_probs=skewed_class_probs(skew_class=3, skew_prob=0.5))
  batch = next(iter(pipeline.make_domain_dataset(cfg, batch_size=6, seed=0)))
  assert batch["image"].shape == (6, 32, 32, 1) and batch["label"].dtype == np.int32
  cfg.num_workers = 1  # The tfds source and the builder module reach a spawned worker.
  it = iter(pipeline.make_domain_dataset(cfg, batch_size=6, seed=0))
  try:
    _assert_batches_equal([next(it)], [batch])
  finally:
    it.close()
  # 10 passes over the 30 re-sampled records: their share of 3s, drawn with p = 0.5.
  fixed = pipeline.fixed_batch(cfg, 300)
  assert 0.3 < (fixed["label"] == 3).mean() < 0.7


def test_worker_processes_give_the_same_stream():
  cfg = _config(augment="sr_mnist", class_probs=skewed_class_probs())
  local = _take(iter(pipeline.make_domain_dataset(cfg, batch_size=4, seed=0)), 3)
  cfg.num_workers = 2
  it = iter(pipeline.make_domain_dataset(cfg, batch_size=4, seed=0))
  try:
    _assert_batches_equal(_take(it, 3), local)
  finally:
    it.close()


def test_read_threads_and_num_workers_auto_pick_by_platform_and_host_cores():
  cfg = _config()
  assert cfg.num_workers == -1  # auto
  assert pipeline.num_workers(cfg, backend="cpu", cpu_count=16) == 0
  assert pipeline.num_workers(cfg, backend="gpu", cpu_count=16) == 4
  assert pipeline.num_workers(cfg, backend="tpu", cpu_count=240) == 8
  assert pipeline.num_workers(cfg, backend="gpu", cpu_count=2) == 1
  cfg.num_workers = 3
  assert pipeline.num_workers(cfg, backend="cpu") == 3
  cfg.num_workers = -2
  with pytest.raises(ValueError, match="num_workers must be >= 0 or -1"):
    pipeline.num_workers(cfg)
  assert cfg.read_threads == -1  # auto
  assert pipeline.read_threads(cfg, backend="cpu") == 1
  assert pipeline.read_threads(cfg, backend="gpu") == 4
  cfg.read_threads = 2
  assert pipeline.read_threads(cfg, backend="cpu") == 2
  cfg.num_workers, cfg.read_threads = 0, 0
  with pytest.raises(ValueError, match="read_threads must be >= 1 or -1"):
    pipeline.make_domain_dataset(cfg, batch_size=2, seed=0)

"""bfloat16 compute (`config.compute_dtype`): float32 state, bfloat16 convolutions, and
losses that track a float32 run of the same steps on the embedded digits.

Tolerance (`losses_deviation`): over consecutive windows of 10 steps, each loss's
mean under bfloat16 is within 0.1 * |float32 mean| + 0.1 * (float32 per-step std over
the run) + 2 * (the largest windowed deviation of a float32 run whose initial state
was rounded to bfloat16) of its float32 mean. Single steps are not compared: a GAN
amplifies rounding differences into occasional one-step spikes (seen on BalaGAN's R1
term) that average out. The last term is the GAN's own sensitivity: over 200 steps
two float32 runs a bf16 rounding apart drift as far apart as the bf16 run does
(BalaGAN's g_adv reached 4.4x the first two terms), while a broken bf16 step (a loss
or penalty losing its precision) drifts much further.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import balagan_tiny
import jdbw_tiny
from balagan_jax import modalities as balagan_modalities
from balagan_jax import train as balagan_train
from balagan_jax.method import BalaGAN
from configs import balagan_digits_demo, digits_demo
from i2i_jax.training import sharding, trainer
from i2i_jax.training.state import compute_dtype
from jdbw_jax import train as jdbw_train
from jdbw_jax.method import JDBW

JDBW_LOSSES = ("g_loss", "w_loss", "d_loss", "critic_gap", "gp")
BALAGAN_LOSSES = ("d_loss", "d_real", "d_fake", "r1", "d_cls", "g_loss", "g_adv", "g_rec",
                  "g_fm")
WINDOW, REL_TOL, SPREAD_TOL, CHAOS_TOL = 10, 0.1, 0.1, 2.0


def test_auto_is_float32_on_cpu_and_bfloat16_on_accelerators(monkeypatch):
  assert compute_dtype("auto") == jnp.float32  # this suite runs on CPU
  for backend in ("gpu", "tpu"):
    monkeypatch.setattr(jax, "default_backend", lambda b=backend: b)
    assert compute_dtype("auto") == jnp.bfloat16
  assert compute_dtype("float32") == jnp.float32  # explicit names still force
  assert compute_dtype("bfloat16") == jnp.bfloat16


def test_unknown_compute_dtype_is_rejected_by_name():
  with pytest.raises(ValueError, match="compute_dtype 'float16'"):
    compute_dtype("float16")


# ------------------------------------------------------------------ configs
def small_jdbw(dtype):
  """The embedded demo at the test suite's tiny size (tests/jdbw_tiny.py): its float32
  step is the one the other JD-BW tests compile, so the compile cache serves it."""
  return jdbw_tiny.tiny_config(compute_dtype=dtype)


def small_balagan(dtype):
  config = balagan_digits_demo.get_config()
  config.compute_dtype = dtype
  model = config.model
  model.nf, model.nf_mlp, model.latent_dim, model.num_res_blocks = 4, 8, 4, 1
  model.d_nf, model.d_num_res_blocks = 4, 2
  config.batch_size = 4
  return config


def demo_config(module, dtype):
  config = module.get_config()
  config.compute_dtype = dtype
  return config


# ------------------------------------------------------------------ runs
def jdbw_run(config):
  """(state, jitted step, batch iterator, grain streams) exactly as jdbw_jax.train builds them."""
  mesh = sharding.make_data_mesh()
  streams = jdbw_train.make_streams(config)
  size = config.data.source.image_size
  model = JDBW(config, (size, size, config.data.source.channels),
               (size, size, config.data.target.channels))
  state = sharding.replicate(jax.jit(model.init_state)(jax.random.key(config.seed)), mesh)
  return (state, trainer.jit_train_step(model.train_step, mesh),
          trainer.device_batches(streams, jdbw_train.put_batch, mesh), streams)


def balagan_run(config, workdir):
  """The translation stage as balagan_jax.train builds it, on ground-truth modalities."""
  config.modalities.assignment = "labels"  # stage 1 is not what is being compared
  config.data.source.label_key = "label"
  mods = balagan_modalities.find_modalities(config, str(workdir))
  num_classes = balagan_modalities.num_training_modalities(config, mods)
  streams = balagan_train.make_streams(config, balagan_train.modality_union(config, mods),
                                       num_classes)
  mesh = sharding.make_data_mesh()
  size = config.data.source.image_size
  model = BalaGAN(config, num_classes, (size, size, config.data.source.channels))
  state = sharding.replicate(jax.jit(model.init_state)(jax.random.key(config.seed)), mesh)
  return (state, trainer.jit_train_step(model.train_step, mesh),
          trainer.device_batches(streams, balagan_train.put_batch, mesh), streams)


def rounded_to_bfloat16(state):
  """The state with every float leaf rounded to bfloat16 precision (kept float32)."""
  return jax.tree_util.tree_map(
      lambda x: x.astype(jnp.bfloat16).astype(x.dtype)
      if jnp.issubdtype(x.dtype, jnp.floating) else x, state)


def run_losses(run, keys, steps, perturb=None):
  """Per-step losses {key: (steps,)} of `steps` training steps, the final state and the
  step's StableHLO text; `perturb` maps the initial state first."""
  state, step, batches, streams = run
  if perturb is not None:
    state = perturb(state)
  batch = next(batches)
  lowered = step.lower(state, batch)
  compiled = lowered.compile()
  per_step = []
  for i in range(steps):
    state, metrics = compiled(state, batch if i == 0 else next(batches))
    per_step.append({k: metrics[k] for k in keys + ("finite",)})
  for stream in streams.values():
    stream.close()
  per_step = jax.device_get(per_step)
  assert all(m["finite"] == 1 for m in per_step), "a step was skipped as non-finite"
  return {k: np.array([m[k] for m in per_step]) for k in keys}, state, lowered.as_text()


def losses_deviation(fp32, bf16, fp32_rounded, window=WINDOW):
  """Per loss: the worst |windowed mean difference| / tolerance (<= 1 passes)."""
  out = {}
  for key, ref in fp32.items():
    n = len(ref) // window * window
    windowed = lambda losses: losses[:n].reshape(-1, window).mean(1)
    m32 = windowed(ref)
    chaos = np.max(np.abs(windowed(fp32_rounded[key]) - m32))
    tolerance = REL_TOL * np.abs(m32) + SPREAD_TOL * ref.std() + CHAOS_TOL * chaos
    out[key] = float(np.max(np.abs(windowed(bf16[key]) - m32) / tolerance))
  return out


def assert_bfloat16_tracks_float32(make_run, keys, steps):
  """Also checks that the bf16 run convolved in bf16 and kept its state float32."""
  fp32, _, hlo32 = run_losses(make_run("float32"), keys, steps)
  fp32_rounded, _, _ = run_losses(make_run("float32"), keys, steps, rounded_to_bfloat16)
  bf16, state, hlo16 = run_losses(make_run("bfloat16"), keys, steps)
  assert convolution_dtypes(hlo32) == {"f32"}
  assert convolution_dtypes(hlo16) == {"bf16"}
  assert float_dtypes(state) == {jnp.dtype(jnp.float32)}
  ratios = losses_deviation(fp32, bf16, fp32_rounded)
  print("worst windowed deviation / tolerance:", {k: round(v, 3) for k, v in ratios.items()})
  assert max(ratios.values()) <= 1, ratios


# ------------------------------------------------------------------ dtypes in the step
def convolution_dtypes(hlo_text: str) -> set[str]:
  """Element types of the operands of every convolution in a StableHLO module."""
  convs = [line for line in hlo_text.splitlines() if "stablehlo.convolution" in line]
  assert convs, "no convolutions in the lowered step"
  return {dtype for line in convs
          for dtype in re.findall(r"tensor<[^>]*x(\w+)>", line.split(" : ")[-1])}


def float_dtypes(tree) -> set:
  return {leaf.dtype for leaf in jax.tree_util.tree_leaves(tree)
          if jnp.issubdtype(leaf.dtype, jnp.floating)}


def test_balagan_bfloat16_step_convolves_in_bf16_and_keeps_float32_state():
  """Every convolution of the step (forward, backward, R1) takes bf16 operands, while
  parameters, optimizer state and EMA weights stay float32; float32 is the control.
  (JD-BW's step is checked the same way, running, in the loss tracking test below.)"""
  for dtype, expected in (("bfloat16", {"bf16"}), ("float32", {"f32"})):
    config = balagan_tiny.tiny_config(compute_dtype=dtype)
    model = BalaGAN(config, 5, (32, 32, 3))
    domain = {"image": jax.ShapeDtypeStruct((config.batch_size, 32, 32, 3), jnp.float32),
              "label": jax.ShapeDtypeStruct((config.batch_size,), jnp.int32)}
    state = jax.eval_shape(model.init_state, jax.random.key(0))
    lowered = jax.jit(model.train_step).lower(state, {"content": domain, "reference": domain})
    assert convolution_dtypes(lowered.as_text()) == expected, dtype
    new_state, _ = lowered.out_info
    assert float_dtypes(state) == float_dtypes(new_state) == {jnp.dtype(jnp.float32)}, dtype


# ------------------------------------------------------------------ losses
def test_jdbw_bfloat16_losses_track_float32_on_the_embedded_digits():
  assert_bfloat16_tracks_float32(lambda dtype: jdbw_run(small_jdbw(dtype)), JDBW_LOSSES,
                                 steps=20)


@pytest.mark.slow
def test_balagan_bfloat16_losses_track_float32_on_the_embedded_digits(tmp_path):
  """The BalaGAN digits demo with narrow networks: about a minute on 2 cores."""
  assert_bfloat16_tracks_float32(
      lambda dtype: balagan_run(small_balagan(dtype), tmp_path / dtype), BALAGAN_LOSSES,
      steps=30)


@pytest.mark.slow
def test_jdbw_demo_first_200_steps_track_float32():
  """configs/digits_demo.py as it is (B=32, d=5): 5-10 minutes per dtype on 2 cores."""
  assert_bfloat16_tracks_float32(lambda dtype: jdbw_run(demo_config(digits_demo, dtype)),
                                 JDBW_LOSSES, steps=200)


@pytest.mark.slow
def test_balagan_demo_first_200_translation_steps_track_float32(tmp_path):
  """configs/balagan_digits_demo.py's translation stage (B=8), on label modalities."""
  assert_bfloat16_tracks_float32(
      lambda dtype: balagan_run(demo_config(balagan_digits_demo, dtype), tmp_path / dtype),
      BALAGAN_LOSSES, steps=200)

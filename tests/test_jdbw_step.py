"""One JD-BW generator step (with its scanned critic steps) on synthetic data."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jdbw_tiny
from i2i_jax.training import sharding, trainer
from jdbw_jax import method


@pytest.fixture(scope="module")
def model_and_state():
  """The tiny config's step jitted, placed and fed as training does, so that the compile
  cache shares it with the training tests; it donates its state, so it gets copies."""
  config = jdbw_tiny.tiny_config()
  model = method.JDBW(config, (32, 32, 1), (32, 32, 1))
  mesh = sharding.make_data_mesh()
  state = sharding.replicate(jax.jit(model.init_state)(jax.random.key(0)), mesh)
  jitted = trainer.jit_train_step(model.train_step, mesh)

  def train_step(state, batch):
    return jitted(jax.tree_util.tree_map(jnp.copy, state),
                  sharding.shard_batch(batch, mesh=mesh, batch_axis=1))

  return config, model, state, train_step


def power_vectors(net_state):
  return [leaf for path, leaf in jax.tree_util.tree_leaves_with_path(net_state.batch_stats)
          if jax.tree_util.keystr(path).endswith("/u']")]


def test_one_step_updates_generators_critic_and_weights(model_and_state):
  config, _, state, train_step = model_and_state
  new, metrics = train_step(state, jdbw_tiny.synthetic_batch(config))
  assert jdbw_tiny.leaves_differ(new.g.params, state.g.params)
  assert jdbw_tiny.leaves_differ(new.d.params, state.d.params)
  assert jdbw_tiny.leaves_differ(new.w.params, state.w.params)
  # Spectral-norm power iterations (the u vectors) advance in G and D.
  assert jdbw_tiny.leaves_differ(power_vectors(new.g), power_vectors(state.g))
  assert jdbw_tiny.leaves_differ(power_vectors(new.d), power_vectors(state.d))
  assert int(new.step) == 1
  for name in ("g_loss", "d_loss", "w_loss", "gp", "critic_gap", "weight_x_mean"):
    assert np.isfinite(float(metrics[name])), name
  assert float(metrics["finite"]) == 1.0
  np.testing.assert_allclose(metrics["class_share_x"].sum(), 1.0, rtol=1e-5)
  # Normalised two-sided weights (the default) have batch mean 1 and a positive floor,
  # and respect the clip ratio.
  assert config.batch_weight.normalize
  np.testing.assert_allclose(float(metrics["weight_x_mean"]), 1.0, rtol=1e-5)
  assert 0.0 < float(metrics["weight_x_min"]) <= 1.0 <= float(metrics["weight_x_max"])
  assert float(metrics["weight_x_ratio"]) <= float(metrics["clip_ratio"]) + 1e-5


def critic_loop_models(d_steps=2):
  return {loop: method.JDBW(jdbw_tiny.tiny_config(critic_loop=loop, d_steps=d_steps),
                            (32, 32, 1), (32, 32, 1)) for loop in ("scan", "unrolled")}


def test_critic_steps_run_inside_one_jitted_call_scanned_or_unrolled(model_and_state):
  _, _, state, _ = model_and_state
  batch = jdbw_tiny.synthetic_batch(jdbw_tiny.tiny_config(d_steps=2))
  for loop, model in critic_loop_models().items():
    jaxpr = jax.make_jaxpr(model.train_step)(state, batch)
    scans = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "scan"]
    if loop == "scan":
      assert len(scans) == 1 and scans[0].params["length"] == 2
    else:
      assert not scans


@pytest.mark.slow
def test_scanned_and_unrolled_critic_steps_agree(model_and_state):
  _, _, state, _ = model_and_state
  batch = jdbw_tiny.synthetic_batch(jdbw_tiny.tiny_config(d_steps=2))
  results = {}
  for loop, model in critic_loop_models().items():
    new, metrics = jax.jit(model.train_step)(state, batch)
    results[loop] = (new.g, new.d, new.w, metrics)
  for a, b in zip(jax.tree_util.tree_leaves(results["scan"]),
                  jax.tree_util.tree_leaves(results["unrolled"])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_non_finite_step_leaves_state_unchanged(model_and_state):
  config, _, state, train_step = model_and_state
  batch = jdbw_tiny.synthetic_batch(config)
  batch["x"]["image"] = batch["x"]["image"].at[0, 0, 0, 0, 0].set(jnp.nan)
  new, metrics = train_step(state, batch)
  assert float(metrics["finite"]) == 0.0
  assert float(metrics["finite_g"]) == 0.0  # slot 0 feeds the generator step
  for a, b in zip(jax.tree_util.tree_leaves((new.g, new.d, new.w)),
                  jax.tree_util.tree_leaves((state.g, state.d, state.w))):
    np.testing.assert_array_equal(a, b)
  assert int(new.step) == 1


@pytest.mark.parametrize("scheme,variant", [
    # Each switch is its own ~35 s compile on CPU: all are slow tests, to keep CI within
    # budget. One-sided weights also run in test_eight_devices_match_one_device, "none"
    # in the quality benchmark's quick run (slow too).
    pytest.param("none", "composite", marks=pytest.mark.slow),
    pytest.param("one_sided", "composite", marks=pytest.mark.slow),
    pytest.param("two_sided", "joint", marks=pytest.mark.slow),
    pytest.param("two_sided", "single", marks=pytest.mark.slow)])
def test_ablation_switches(scheme, variant):
  config = jdbw_tiny.tiny_config(**{"batch_weight.scheme": scheme,
                                    "batch_weight.variant": variant})
  model = method.JDBW(config, (32, 32, 1), (32, 32, 1))
  state = jax.jit(model.init_state)(jax.random.key(0))
  new, metrics = jax.jit(model.train_step)(state, jdbw_tiny.synthetic_batch(config))
  assert float(metrics["finite"]) == 1.0
  if scheme == "none":  # plain joint discriminator: W untouched, unit weights
    assert not jdbw_tiny.leaves_differ(new.w.params, state.w.params)
    assert float(metrics["weight_x_ratio"]) == 1.0
  else:
    assert jdbw_tiny.leaves_differ(new.w.params, state.w.params)
  if scheme == "one_sided":  # softmax weights have mean one over the batch
    np.testing.assert_allclose(float(metrics["weight_x_mean"]), 1.0, rtol=1e-5)


MULTI_DEVICE_SCRIPT = r"""
import jax, numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
import jdbw_tiny
from jdbw_jax import method
from i2i_jax.training import sharding
assert jax.device_count() == 8, jax.devices()
config = jdbw_tiny.tiny_config(**{"batch_weight.scheme": SCHEME})
model = method.JDBW(config, (32, 32, 1), (32, 32, 1))
state = jax.jit(model.init_state)(jax.random.key(0))
batch = jdbw_tiny.synthetic_batch(config)
one_dev = jax.device_put((state, batch), jax.devices()[0])
ref_state, ref_metrics = jax.jit(model.train_step)(*one_dev)
mesh = sharding.make_data_mesh()
st = sharding.replicate(state, mesh)
b = sharding.shard_batch(jax.device_get(batch), mesh, batch_axis=1)
assert len(b["x"]["image"].sharding.device_set) == 8
new, metrics = jax.jit(model.train_step)(st, b)
for k in ("g_loss", "w_loss", "d_loss", "gp", "weight_x_max", "weight_x_min"):
  np.testing.assert_allclose(metrics[k], ref_metrics[k], rtol=2e-4, atol=2e-5, err_msg=k)
assert float(metrics["finite"]) == 1.0
if SCHEME == "one_sided":  # softmax weights over the global batch have mean one
  np.testing.assert_allclose(float(metrics["weight_x_mean"]), 1.0, rtol=1e-5)
  assert float(metrics["weight_x_ratio"]) <= float(metrics["clip_ratio"]) * (1 + 1e-5)
leaves = jax.tree_util.tree_leaves
# The gradients, as Adam's moments hold them, equal up to the reduction order, on the
# scale of each network's largest (a bias whose gradient cancels to ~0 has no scale).
# Adam moves a parameter by about +-lr whatever its gradient's size, so where the
# gradient is near zero its sign (and the step) may flip with the reduction order;
# elsewhere the parameters agree to float precision.
for net, ref in ((new.g, ref_state.g), (new.d, ref_state.d), (new.w, ref_state.w)):
  for moment in ("mu", "nu"):
    got, want = (leaves(getattr(n.opt_state[0], moment)) for n in (net, ref))
    scale = max(float(np.max(np.abs(w))) for w in want)
    for a, r in zip(got, want):
      np.testing.assert_allclose(a, r, rtol=1e-3, atol=1e-4 * scale)
  mu = leaves(ref.opt_state[0].mu)
  scale = max(float(np.max(np.abs(m))) for m in mu)
  for a, r, m in zip(leaves(net.params), leaves(ref.params), mu):
    clear = np.abs(np.asarray(m)) > 1e-2 * scale
    np.testing.assert_allclose(np.asarray(a)[clear], np.asarray(r)[clear], rtol=1e-5,
                               atol=1e-3 * config.optim.lr_g)
print("MULTI_DEVICE_OK")
"""


# Both behind -m slow: an 8-device subprocess compile is the suite's largest single
# cost on two cores; tests/test_sharding.py keeps the 8-device data path in CI.
@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["one_sided", "two_sided"])
def test_eight_devices_match_one_device(scheme):
  """The batch softmax (one-sided) must normalise over the GLOBAL batch."""
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env["PYTHONPATH"] = os.pathsep.join([root, os.path.join(root, "tests"),
                                       env.get("PYTHONPATH", "")])
  script = MULTI_DEVICE_SCRIPT.replace("SCHEME", repr(scheme))
  result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=600, cwd=root)
  assert "MULTI_DEVICE_OK" in result.stdout, result.stderr[-3000:]

"""Shapes of every JD-BW network (Tables 1 and 2, Appendix B.1, Section 4.3)."""

import jax
import jax.numpy as jnp
import pytest

from jdbw_jax import models


def shapes(module, *args, **kwargs):
  """Output and variable shapes without compiling (jax.eval_shape)."""
  variables = jax.eval_shape(lambda: module.init(jax.random.key(0), *args, **kwargs))
  return jax.eval_shape(lambda v: module.apply(v, *args, **kwargs), variables), variables


def init_apply(module, *args, **kwargs):
  """Jitted init + apply: eager op-by-op dispatch would dominate the test time."""
  variables = jax.jit(lambda *a: module.init(jax.random.key(0), *a, **kwargs))(*args)
  return jax.jit(lambda v, *a: module.apply(v, *a, **kwargs))(variables, *args), variables


@pytest.mark.parametrize("kernel,stride,upsample", [(4, 2, "transpose"), (1, 1, "transpose"),
                                                    (4, 2, "pixel_shuffle")])
def test_table2_generator_shapes(kernel, stride, upsample):
  x, z = jnp.zeros((2, 32, 32, 1)), jnp.zeros((2, 8))
  gen = models.Generator32(out_channels=3, kernel=kernel, stride=stride, features=16,
                           upsample=upsample)
  out, variables = init_apply(gen, x, z, update_stats=False)
  assert out.shape == (2, 32, 32, 3)
  assert float(jnp.abs(out).max()) <= 1.0  # tanh images
  assert "batch_stats" in variables  # spectral norm's power-iteration state


def test_table2_first_conv_and_noise_join():
  gen = models.Generator32(out_channels=1, kernel=4, stride=2, features=64)
  variables = jax.eval_shape(lambda: gen.init(jax.random.key(0), jnp.zeros((1, 32, 32, 1)),
                                              jnp.zeros((1, 8)), update_stats=False))
  params = variables["params"]
  assert params["Downsample_0"]["Conv_0"]["Conv_0"]["kernel"].shape == (4, 4, 1, 64)
  # concat(x' (64), z' (d = 8)) -> 1x1 conv(64)
  assert params["Conv_1"]["Conv_0"]["kernel"].shape == (1, 1, 64 + 8, 64)
  assert params["Upsample_0"]["ConvTranspose_0"]["kernel"].shape == (4, 4, 64, 1)


def test_noise_changes_the_output():
  gen = models.Generator32(out_channels=1, features=8)
  x = jax.random.normal(jax.random.key(1), (2, 32, 32, 1))
  _, variables = init_apply(gen, x, jnp.zeros((2, 8)), update_stats=False)
  apply = jax.jit(lambda z: gen.apply(variables, x, z, update_stats=False))
  a, b = apply(-jnp.ones((2, 8))), apply(jnp.ones((2, 8)))
  assert float(jnp.abs(a - b).max()) > 1e-4


def test_residual_generator_128_shapes():
  gen = models.ResidualGenerator(out_channels=3, features=8, num_down=2, num_res=1)
  out, _ = shapes(gen, jnp.zeros((1, 128, 128, 3)), jnp.zeros((1, 16)), update_stats=False)
  assert out.shape == (1, 128, 128, 3)


def test_table1_joint_discriminator_shapes():
  disc = models.JointDiscriminator()
  x, y = jnp.zeros((3, 32, 32, 1)), jnp.zeros((3, 32, 32, 3))
  out, variables = shapes(disc, x, y, update_stats=False)
  assert out.shape == (3,)
  p = variables["params"]
  # Level 1: x, y streams conv(32), joint stream conv(64) on concat(x, y).
  assert p["Downsample_1"]["Conv_0"]["Conv_0"]["kernel"].shape == (4, 4, 1 + 3, 64)
  # Level 2 joint: concat(x1, xy1, y1) = 32 + 64 + 32 -> 128, then 2 ResBlock(128).
  assert p["Downsample_4"]["Conv_0"]["Conv_0"]["kernel"].shape == (4, 4, 128, 128)
  assert "ResBlock_1" in p
  # fc 1024 -> 256 -> 1: 2x2x256 features after the last 4x4 stride-2 conv.
  assert p["Dense_0"]["Dense_0"]["kernel"].shape == (1024, 256)
  assert p["Dense_1"]["Dense_0"]["kernel"].shape == (256, 1)


def test_joint_discriminator_128_keeps_fc_sizes():
  disc = models.JointDiscriminator(
      levels=((32, 64), (64, 128), (128, 256), (128, 256), (128, 256)))
  variables = jax.eval_shape(lambda: disc.init(jax.random.key(0), jnp.zeros((1, 128, 128, 3)),
                                               jnp.zeros((1, 128, 128, 3)), update_stats=False))
  assert variables["params"]["Dense_0"]["Dense_0"]["kernel"].shape == (1024, 256)


@pytest.mark.parametrize("variant,logit_shape", [("composite", (4, 2)), ("joint", (4,)),
                                                 ("single", (4,))])
def test_weight_network_variants(variant, logit_shape):
  x, y = jnp.ones((4, 32, 32, 1)), jnp.ones((4, 32, 32, 3))
  nets = models.WeightNetworks(variant, features=8)
  (lx, ly), variables = init_apply(nets, x, y, x, y)  # values: the single-net sign check
  assert lx.shape == ly.shape == logit_shape
  names = set(variables["params"])
  assert names == ({"wx", "wy"} if variant == "composite" else {"w"})
  if variant == "single":
    # wy = s(-W(Gyx y)): the y side is scored by the same x-domain network, negated.
    assert jnp.allclose(lx, -ly)


def test_weight_net_is_dcgan_discriminator_with_four_convs():
  net = models.WeightNet(features=64)
  variables = jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))
  widths = [variables["params"][f"Downsample_{i}"]["Conv_0"]["Conv_0"]["kernel"].shape[-1]
            for i in range(4)]
  assert widths == [64, 128, 256, 512]

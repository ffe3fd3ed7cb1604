"""BalaGAN networks: shapes, the class-indexed head, and parameter-count fidelity."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from balagan_jax import encoder, models


def num_params(tree) -> int:
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


# rbg keys: XLA:CPU compiles threefry's bit generator for ~2 s per initialiser call,
# which would dominate these tests; the modules are agnostic to the key's impl.
KEY = jax.random.key(0, impl="rbg")


def abstract_variables(module, *args, **kwargs):
  """Variable shapes without running anything (jax.eval_shape of init)."""
  return jax.eval_shape(lambda: module.init(KEY, *args, **kwargs))


def init_apply(module, *args, method=None, **kwargs):
  """Jitted init + apply: eager op-by-op dispatch would dominate the test time."""
  variables = jax.jit(lambda *a: module.init(KEY, *a, **kwargs))(*args)
  out = jax.jit(lambda v, *a: module.apply(v, *a, method=method, **kwargs))(variables, *args)
  return out, variables


TINY_G = dict(nf=8, nf_mlp=16, latent_dim=8)


@pytest.fixture(scope="module")
def tiny_generator():
  """Every generator method on one tiny batch, in a single compiled program."""
  gen = models.Generator(**TINY_G)
  x = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3), minval=-1, maxval=1)
  y = jax.random.uniform(jax.random.key(2), (2, 32, 32, 3), minval=-1, maxval=1)
  variables = jax.jit(lambda a, b: gen.init(KEY, a, b))(x, y)

  @jax.jit
  def run(v):
    content = gen.apply(v, x, method="encode_content")
    style = gen.apply(v, y, method="encode_style")
    mean_style = style.mean(axis=0, keepdims=True)  # FUNIT's k-shot class code
    return dict(out=gen.apply(v, x, y), content=content, style=style,
                decoded=gen.apply(v, content, style, method="decode"),
                shared=gen.apply(v, content, mean_style, method="decode"))

  return run(variables)


def test_generator_shapes_and_range(tiny_generator):
  out = tiny_generator["out"]
  assert out.shape == (2, 32, 32, 3)
  assert float(jnp.abs(out).max()) <= 1.0  # tanh
  assert tiny_generator["content"].shape == (2, 4, 4, 8 * 8)  # 1/8 resolution, nf * 2^3 channels
  assert tiny_generator["style"].shape == (2, 8)
  np.testing.assert_allclose(tiny_generator["decoded"], out, atol=1e-5)  # __call__ = decode(Es, Et)


def test_style_changes_output_and_single_style_broadcasts(tiny_generator):
  shared = tiny_generator["shared"]
  assert shared.shape == (2, 32, 32, 3)
  assert float(jnp.abs(shared - tiny_generator["out"]).max()) > 1e-5


def test_generator_layer_structure():
  """FUNIT's widths: encoder 64->128->256->512, style 64->128->256->256->256->64."""
  params = abstract_variables(models.Generator(), jnp.zeros((1, 128, 128, 3)),
                              jnp.zeros((1, 128, 128, 3)))["params"]
  enc = params["content_encoder"]
  assert enc["ConvBlock_0"]["Conv_0"]["Conv_0"]["kernel"].shape == (7, 7, 3, 64)
  assert enc["ConvBlock_3"]["Conv_0"]["Conv_0"]["kernel"].shape == (4, 4, 256, 512)
  sty = params["style_encoder"]
  assert [sty[f"ConvBlock_{i}"]["Conv_0"]["Conv_0"]["kernel"].shape[-1] for i in range(5)] == [
      64, 128, 256, 256, 256]
  assert sty["Conv_0"]["Conv_0"]["kernel"].shape == (1, 1, 256, 64)
  # 2 AdaIN res blocks x 2 AdaIN layers x (scale, bias) x 512 channels.
  assert params["mlp"]["Dense_2"]["Dense_0"]["kernel"].shape == (256, 2 * 2 * 2 * 512)


def test_decoder_rejects_wrong_adain_params():
  dec = models.Decoder(channels=16, num_upsamples=1, num_res_blocks=1)
  with pytest.raises(ValueError, match="AdaIN parameters"):
    abstract_variables(dec, jnp.zeros((1, 4, 4, 16)), jnp.zeros((1, 10)))


def test_instance_norm_statistics():
  x = jax.random.normal(jax.random.key(0), (2, 5, 5, 3)) * 4 + 2
  y = models.instance_norm(x)
  np.testing.assert_allclose(y.mean(axis=(1, 2)), 0, atol=1e-5)
  np.testing.assert_allclose(y.var(axis=(1, 2)), 1, atol=1e-3)


TINY_D = dict(num_classes=5, nf=8, num_res_blocks=4)


@pytest.fixture(scope="module")
def tiny_discriminator():
  disc = models.Discriminator(**TINY_D)
  x = jax.random.normal(jax.random.key(3), (3, 32, 32, 3))
  labels = jnp.array([0, 4, 2])
  out, variables = init_apply(disc, x, labels)
  return disc, variables, x, labels, out


def test_discriminator_shapes(tiny_discriminator):
  _, _, _, _, (adv_map, cls_logits, features) = tiny_discriminator
  # 4 blocks = 2 pairs, one 3x3/2 pool between them; widths 8 -> 16 -> 32.
  assert adv_map.shape == (3, 16, 16)
  assert cls_logits.shape == (3, 5)
  assert features.shape == (3, 16, 16, 32)


def test_adversarial_head_returns_the_labelled_class_map(tiny_discriminator):
  disc, variables, x, labels, (adv_map, cls_logits, features) = tiny_discriminator
  params = variables["params"]

  def head_maps(head):  # lrelu then 1x1 conv, recomputed from the returned features
    conv = params[head]["Conv_0"]["Conv_0"]
    act = jnp.where(features > 0, features, 0.2 * features)
    return jnp.einsum("bhwc,ck->bhwk", act, conv["kernel"][0, 0]) + conv["bias"]

  maps = head_maps("adv_head")
  for b, label in enumerate(labels):
    np.testing.assert_allclose(adv_map[b], maps[b, :, :, label], rtol=1e-5, atol=1e-5)
  other_labels = (labels + 1) % 5
  other, _, _ = jax.jit(disc.apply)(variables, x, other_labels)
  np.testing.assert_allclose(other[0], maps[0, :, :, 1], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(cls_logits, head_maps("cls_head").mean(axis=(1, 2)),
                             rtol=1e-5, atol=1e-5)


def test_select_class():
  maps = jnp.arange(2 * 1 * 2 * 3, dtype=jnp.float32).reshape(2, 1, 2, 3)
  np.testing.assert_array_equal(models.select_class(maps, jnp.array([2, 0])),
                                [[[2.0, 5.0]], [[6.0, 9.0]]])
  with pytest.raises(ValueError, match="labels"):
    models.select_class(maps, jnp.array([0]))


def test_discriminator_rejects_odd_block_count():
  with pytest.raises(ValueError, match="even"):
    abstract_variables(models.Discriminator(3, nf=8, num_res_blocks=3), jnp.zeros((1, 32, 32, 3)),
                       jnp.zeros((1,), jnp.int32))


def test_contrastive_encoder_cifar_stem_and_batch_stats():
  enc = encoder.ContrastiveEncoder(stem="cifar", width=8, projection_dim=16, stage_sizes=(1, 1))
  x = jax.random.normal(jax.random.key(4), (4, 16, 16, 3))
  variables = jax.jit(lambda a: enc.init(KEY, a, train=False))(x)
  train = jax.jit(lambda v, a: enc.apply(v, a, train=True, mutable=["batch_stats"]))
  (h, z), updates = train(variables, x)
  assert h.shape == (4, 16) and z.shape == (4, 16)  # width * 2^(stages - 1) pooled features
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), variables["batch_stats"],
                       updates["batch_stats"])
  assert max(jax.tree.leaves(moved)) > 0


def test_contrastive_encoder_imagenet_stem_shapes():
  enc = encoder.ContrastiveEncoder()
  x = jnp.zeros((2, 128, 128, 3))
  variables = abstract_variables(enc, x, train=False)
  h, z = jax.eval_shape(lambda v: enc.apply(v, x, train=False), variables)
  assert h.shape == (2, 512) and z.shape == (2, 256)
  assert variables["params"]["stem_conv"]["kernel"].shape == (7, 7, 3, 64)
  with pytest.raises(ValueError, match="stem"):
    abstract_variables(encoder.ContrastiveEncoder(stem="tiny"), x, train=False)


def test_parameter_counts_match_the_authors_models():
  """At 128px, nf 64, dog2wolf's 40 + 1 classes: G 29.9M, D 54.2M (authors' PyTorch).

  The exact counts follow from FUNIT's layer list: G = Es 12,202,112 + Et 2,779,328 +
  F 13,749,891 + MLP 1,135,104; D = trunk 54,130,624 + 2 heads x 1024 x 41 (+ bias).
  """
  x = jnp.zeros((1, 128, 128, 3))
  g = num_params(abstract_variables(models.Generator(), x, x)["params"])
  d = num_params(abstract_variables(models.Discriminator(num_classes=41), x,
                                    jnp.zeros((1,), jnp.int32))["params"])
  assert abs(g - 29.9e6) / 29.9e6 < 0.005 and g == 29_866_435
  assert abs(d - 54.2e6) / 54.2e6 < 0.005 and d == 54_214_674


def test_resnet18_trunk_matches_torchvision():
  """torchvision resnet18 has 11,689,512 parameters, 513,000 of them in fc."""
  variables = abstract_variables(encoder.ContrastiveEncoder(), jnp.zeros((1, 128, 128, 3)),
                                 train=False)
  params = dict(variables["params"])
  head = params.pop("projection_0"), params.pop("projection_1")
  assert num_params(params) == 11_689_512 - 513_000
  assert num_params(head) == 512 * 512 + 512 + 512 * 256 + 256


def test_bfloat16_compute_keeps_float32_params_and_outputs():
  gen = models.Generator(**TINY_G, dtype=jnp.bfloat16)
  x = jnp.zeros((1, 32, 32, 3))
  variables = abstract_variables(gen, x, x)
  assert {leaf.dtype for leaf in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  assert jax.eval_shape(lambda v: gen.apply(v, x, x), variables).dtype == jnp.float32
  disc = models.Discriminator(**TINY_D, dtype=jnp.bfloat16)
  out = jax.eval_shape(lambda: disc.init_with_output(KEY, x, jnp.zeros((1,), jnp.int32))[0])
  assert {o.dtype for o in out} == {jnp.dtype(jnp.float32)}


def test_funit_kaiming_init_redraws_kernels(tiny_discriminator):
  _, variables, _, _, _ = tiny_discriminator
  params = jax.jit(models.funit_kaiming_init)(jax.random.key(5, impl="rbg"), variables["params"])
  kernel = params["ActFirstResBlock_3"]["ConvBlock_1"]["Conv_0"]["Conv_0"]["kernel"]
  assert kernel.shape == (3, 3, 16, 32)
  np.testing.assert_allclose(float(kernel.std()), math.sqrt(2.0 / (3 * 3 * 16)), rtol=0.05)
  bias = params["ActFirstResBlock_3"]["ConvBlock_1"]["Conv_0"]["Conv_0"]["bias"]
  np.testing.assert_array_equal(bias, 0.0)
  assert jax.tree.structure(params) == jax.tree.structure(variables["params"])

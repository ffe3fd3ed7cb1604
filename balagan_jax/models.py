"""BalaGAN networks: FUNIT's generator and discriminator plus the contrastive encoder.

BalaGAN (Section 3.2) builds its translation network "upon FUNIT" (Liu et al., 2019),
and the authors' code (orpatashnik/BalaGAN, networks/GAN.py) copies FUNIT's
`FewShotGen` and `GPPatchMcResDis` layer for layer, adding one classifier head (Dcls)
to the discriminator. The modules below follow that code exactly (layer order,
reflect padding, affine-free instance norm, activation-first residual blocks), so
that at nf=64, 128x128 and 41 classes the parameter counts equal the authors'
(G 29,866,435; D 54,214,674). Section 3.1's modality encoder (a ResNet-18 with SimCLR's
projection head) is in `encoder`. Module fields carry the `model` config block's names
(the discriminator's without their "d_" prefix), so `method.BalaGAN` maps the block
onto them.

All modules are NHWC. `dtype` is the compute dtype; parameters stay float32, and
normalisation statistics and network outputs are computed in float32.
"""

import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from i2i_jax import layers

Dtype = Any

NORMS = ("none", "in")
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "none": lambda x: x,
    "relu": nn.relu,
    "lrelu": lambda x: nn.leaky_relu(x, 0.2),  # FUNIT's LeakyReLU(0.2)
    "tanh": jnp.tanh,
}


def instance_norm(x: jax.Array, epsilon: float = 1e-5) -> jax.Array:
  """Per-sample, per-channel normalisation over space, without affine parameters.

  This is PyTorch's `nn.InstanceNorm2d` default (affine=False) that FUNIT uses, and
  the normalisation inside its AdaIN; `i2i_jax.layers.InstanceNorm` carries a learned
  scale and bias, which FUNIT's generator does not have. Statistics are float32.
  """
  x32 = x.astype(jnp.float32)
  mean = x32.mean(axis=(1, 2), keepdims=True)
  var = x32.var(axis=(1, 2), keepdims=True)  # biased, as torch's instance norm
  return ((x32 - mean) * lax.rsqrt(var + epsilon)).astype(x.dtype)


def adaptive_instance_norm(x: jax.Array, scale: jax.Array, bias: jax.Array) -> jax.Array:
  """AdaIN (Huang & Belongie, 2017): instance-normalise, then the style's affine.

  FUNIT's `AdaptiveInstanceNorm2d` uses the MLP outputs directly as weight and bias
  (no "1 +" offset). `scale` and `bias` are (B, C).
  """
  scale, bias = (p[:, None, None, :].astype(x.dtype) for p in (scale, bias))
  return instance_norm(x) * scale + bias


def select_class(maps: jax.Array, labels: jax.Array) -> jax.Array:
  """Indexes per-class patch maps (B, h, w, K) by labels (B,) -> (B, h, w).

  FUNIT's multi-task discriminator (`out[index, y, :, :]`): each image is judged only
  by the output channel of its class (Section 3.2, D_adv(.)_{m(x)}).
  """
  if labels.shape != maps.shape[:1]:
    raise ValueError(f"labels {labels.shape} do not match the batch of maps {maps.shape}")
  return jnp.take_along_axis(maps, labels.astype(jnp.int32)[:, None, None, None], axis=-1)[..., 0]


def funit_kaiming_init(key: jax.Array, params: Any) -> Any:
  """Redraws every kernel from N(0, 2 / fan_in); biases keep their zero init.

  The authors' trainer applies `weights_init('kaiming')` (config `init: kaiming`) to
  every Conv2d and Linear of G and D: `kaiming_normal_(a=0, mode='fan_in')` and zero
  bias. flax's `kaiming_normal` is a truncated normal, so the re-draw is done here on
  the initialised tree, as the PyTorch code does. Kernels are HWIO or (in, out), so
  fan_in is the product of all but the last dimension.
  """
  leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
  keys = jax.random.split(key, len(leaves))
  out = []
  for (path, leaf), k in zip(leaves, keys):
    if getattr(path[-1], "key", None) == "kernel":
      fan_in = math.prod(leaf.shape[:-1])
      leaf = jax.random.normal(k, leaf.shape, leaf.dtype) * math.sqrt(2.0 / fan_in)
    out.append(leaf)
  return jax.tree_util.tree_unflatten(treedef, out)


class ConvBlock(nn.Module):
  """FUNIT's `Conv2dBlock`: reflect-padded conv, optional instance norm, activation.

  With `activation_first` the activation precedes the conv (FUNIT's discriminator
  blocks and heads). No spectral norm: FUNIT has none.
  """

  features: int
  kernel: int
  stride: int = 1
  norm: str = "none"
  activation: str = "relu"
  activation_first: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    if self.norm not in NORMS:
      raise ValueError(f"unknown norm {self.norm!r}; expected one of {NORMS}")
    if self.activation not in ACTIVATIONS:
      raise ValueError(
          f"unknown activation {self.activation!r}; expected one of {tuple(ACTIVATIONS)}")
    act = ACTIVATIONS[self.activation]
    if self.activation_first:
      x = act(x)
    x = layers.Conv(self.features, self.kernel, self.stride, use_sn=False, padding="REFLECT",
                    dtype=self.dtype)(x, False)
    if self.norm == "in":
      x = instance_norm(x)
    if not self.activation_first:
      x = act(x)
    return x


class InstanceNormResBlock(nn.Module):
  """FUNIT's `ResBlock(norm='in')`: conv-IN-relu, conv-IN, identity skip.

  Differs from `i2i_jax.layers.ResBlock` in reflect padding and affine-free norm.
  """

  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    h = ConvBlock(c, 3, norm="in", activation="relu", dtype=self.dtype)(x)
    h = ConvBlock(c, 3, norm="in", activation="none", dtype=self.dtype)(h)
    return x + h


class AdaINResBlock(nn.Module):
  """FUNIT decoder's `ResBlock(norm='adain')`: conv-AdaIN-relu, conv-AdaIN, skip.

  `adain_params` (B, 4C) hold [bias_0, scale_0, bias_1, scale_1], the order in which
  FUNIT's `assign_adain_params` slices the MLP output (mean first, then std).
  """

  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, adain_params):
    c = x.shape[-1]
    if adain_params.shape != (x.shape[0], 4 * c):
      raise ValueError(f"AdaINResBlock({c}) needs adain_params ({x.shape[0]}, {4 * c}), "
                       f"got {adain_params.shape}")
    bias0, scale0, bias1, scale1 = jnp.split(adain_params, 4, axis=-1)
    h = ConvBlock(c, 3, activation="none", dtype=self.dtype)(x)
    h = nn.relu(adaptive_instance_norm(h, scale0, bias0))
    h = ConvBlock(c, 3, activation="none", dtype=self.dtype)(h)
    return x + adaptive_instance_norm(h, scale1, bias1)


class ActFirstResBlock(nn.Module):
  """FUNIT's `ActFirstResBlock` (discriminator): (lrelu, 3x3 conv) x 2 plus a skip.

  The hidden width is min(in, out); when the width changes the skip is a 1x1 conv
  without bias (FUNIT's `conv_s`, zero padding, `use_bias=False`).
  """

  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    fin, fout = x.shape[-1], self.features
    if fin != fout:
      skip = nn.Conv(fout, (1, 1), use_bias=False, dtype=self.dtype, name="shortcut")(x)
    else:
      skip = x
    dx = x
    for width in (min(fin, fout), fout):
      dx = ConvBlock(width, 3, activation="lrelu", activation_first=True, dtype=self.dtype)(dx)
    return skip + dx


class ContentEncoder(nn.Module):
  """Es (FUNIT `ContentEncoder`): 7x7 conv, stride-2 4x4 convs, residual blocks.

  Every conv has instance norm and relu; each downsampling doubles the channels, so
  nf=64 with 3 downsamplings gives 512 channels at 1/8 resolution.
  """

  nf: int = 64
  num_downsamples: int = 3
  num_res_blocks: int = 2
  dtype: Dtype = jnp.float32

  @property
  def out_channels(self) -> int:
    return self.nf * 2 ** self.num_downsamples

  @nn.compact
  def __call__(self, x):
    h = ConvBlock(self.nf, 7, norm="in", dtype=self.dtype)(x)
    for i in range(self.num_downsamples):
      h = ConvBlock(self.nf * 2 ** (i + 1), 4, 2, norm="in", dtype=self.dtype)(h)
    for i in range(self.num_res_blocks):
      # Named as before the class was renamed: checkpoints and initialisations keep
      # their parameter names (flax derives each module's init key from its name).
      h = InstanceNormResBlock(dtype=self.dtype, name=f"ResBlock_{i}")(h)
    return h


class StyleEncoder(nn.Module):
  """Et (FUNIT `ClassModelEncoder`): 7x7 conv, 4x4 stride-2 convs, pool, 1x1 conv.

  No normalisation, relu activations; the channels double over the first two
  downsamplings and then stay (64 -> 128 -> 256 -> 256 -> 256). Returns (B, latent_dim).
  """

  nf: int = 64
  num_downsamples: int = 4
  latent_dim: int = 64
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, y):
    h = ConvBlock(self.nf, 7, dtype=self.dtype)(y)
    for i in range(self.num_downsamples):
      h = ConvBlock(self.nf * 2 ** min(i + 1, 2), 4, 2, dtype=self.dtype)(h)
    h = h.mean(axis=(1, 2), keepdims=True)  # AdaptiveAvgPool2d(1)
    h = layers.Conv(self.latent_dim, 1, use_sn=False, dtype=self.dtype)(h, False)
    return h[:, 0, 0, :]


class MLP(nn.Module):
  """FUNIT's `MLP`: style code -> AdaIN parameters (`num_blocks` linear layers).

  Relu after every layer but the last (latent 64 -> 256 -> 256 -> out for 3 blocks).
  """

  out_features: int
  hidden: int = 256
  num_blocks: int = 3
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, s):
    h = s.reshape(s.shape[0], -1)
    for _ in range(self.num_blocks - 1):
      h = nn.relu(layers.Dense(self.hidden, use_sn=False, dtype=self.dtype)(h, False))
    return layers.Dense(self.out_features, use_sn=False, dtype=self.dtype)(h, False)


class Decoder(nn.Module):
  """F (FUNIT `Decoder`): AdaIN residual blocks, then upsample to an image.

  Each of `num_upsamples` stages is nearest x2, 5x5 conv halving the channels,
  instance norm, relu; then a 7x7 conv to `out_channels` and tanh (images in [-1, 1]).
  """

  channels: int = 512
  num_upsamples: int = 3
  num_res_blocks: int = 2
  out_channels: int = 3
  dtype: Dtype = jnp.float32

  @property
  def num_adain_params(self) -> int:
    """Scale and bias for each of the 2 AdaIN layers of every residual block."""
    return self.num_res_blocks * 2 * 2 * self.channels

  @nn.compact
  def __call__(self, content, adain_params):
    if content.shape[-1] != self.channels:
      raise ValueError(f"Decoder({self.channels}) got content with {content.shape[-1]} channels")
    if adain_params.shape[-1] != self.num_adain_params:
      raise ValueError(
          f"Decoder needs {self.num_adain_params} AdaIN parameters, got {adain_params.shape}")
    adain_params = jnp.broadcast_to(adain_params, (content.shape[0], self.num_adain_params))
    h = content
    for block_params in jnp.split(adain_params, self.num_res_blocks, axis=-1):
      h = AdaINResBlock(dtype=self.dtype)(h, block_params)
    for i in range(self.num_upsamples):
      h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)  # nn.Upsample(scale_factor=2), nearest
      h = ConvBlock(self.channels // 2 ** (i + 1), 5, norm="in", dtype=self.dtype)(h)
    h = ConvBlock(self.out_channels, 7, activation="none", dtype=self.dtype)(h)
    return jnp.tanh(h.astype(jnp.float32))


class Generator(nn.Module):
  """G(x, y) = F(Es(x), Et(y)) (Section 3.2; FUNIT `FewShotGen`).

  `encode_style` returns one code per reference image, as FUNIT's training step uses
  them. For k-shot inference FUNIT averages the k codes of a class before the MLP
  (`translate_k_shot`): average `encode_style`'s output and pass it to `decode`, whose
  style batch may be 1 and is broadcast over the content batch.
  """

  nf: int = 64
  nf_mlp: int = 256
  latent_dim: int = 64
  num_mlp_blocks: int = 3
  num_res_blocks: int = 2
  num_downsamples_content: int = 3
  num_downsamples_style: int = 4
  out_channels: int = 3
  dtype: Dtype = jnp.float32

  def setup(self):
    downs = self.num_downsamples_content
    self.content_encoder = ContentEncoder(self.nf, downs, self.num_res_blocks, dtype=self.dtype)
    self.style_encoder = StyleEncoder(self.nf, self.num_downsamples_style, self.latent_dim,
                                      dtype=self.dtype)
    self.decoder = Decoder(self.nf * 2 ** downs, downs, self.num_res_blocks, self.out_channels,
                           dtype=self.dtype)
    self.mlp = MLP(self.decoder.num_adain_params, self.nf_mlp, self.num_mlp_blocks,
                   dtype=self.dtype)

  def encode_content(self, x):
    """Es(x): (B, H, W, 3) -> (B, H/8, W/8, 8 nf)."""
    return self.content_encoder(x)

  def encode_style(self, y):
    """Et(y): (B, H, W, 3) -> (B, latent_dim)."""
    return self.style_encoder(y)

  def decode(self, content, style):
    """F(content, style): the style code sets the AdaIN parameters through the MLP."""
    return self.decoder(content, self.mlp(style))

  def __call__(self, x, y):
    return self.decode(self.encode_content(x), self.encode_style(y))


class Discriminator(nn.Module):
  """D = (Df, Dadv, Dcls): FUNIT's `GPPatchMcResDis` with BalaGAN's classifier head.

  Df: 7x7 conv, then `num_res_blocks` activation-first residual blocks in pairs, with
  reflect-pad + 3x3 stride-2 average pooling between pairs; each pair's second block
  doubles the channels up to `max_channels`. nf=64, 10 blocks: 1024 channels at 1/16.

  Dadv: lrelu + 1x1 conv to one patch map per class, indexed by the label (Section 3.2,
  D_adv(.)_{m(x)}). Dcls: an identical, separately weighted head whose patch logits are
  averaged over space (authors' `cnn_classifier` and `calc_dis_cls_loss`). Appendix A.1
  says the two "share all the layers besides the last two convolution blocks"; the
  authors' code shares everything but the two heads' 1x1 conv blocks, which is what
  reproduces their 54.2M parameters, so that is what is built here.

  Returns (adv_map (B, h, w), cls_logits (B, num_classes), features (B, h, w, C)),
  all float32; `features` is Df's output, which FUNIT's feature matching compares.
  """

  num_classes: int
  nf: int = 64
  num_res_blocks: int = 10
  max_channels: int = 1024
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, labels):
    if self.num_res_blocks < 2 or self.num_res_blocks % 2:
      raise ValueError(f"num_res_blocks must be a positive even number, got {self.num_res_blocks}")
    ch = self.nf
    h = ConvBlock(ch, 7, activation="none", dtype=self.dtype)(x)
    for i in range(self.num_res_blocks // 2):
      out = min(2 * ch, self.max_channels)
      h = ActFirstResBlock(ch, dtype=self.dtype)(h)
      h = ActFirstResBlock(out, dtype=self.dtype)(h)
      if i < self.num_res_blocks // 2 - 1:
        h = jnp.pad(h, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
        h = nn.avg_pool(h, (3, 3), (2, 2))
      ch = out
    adv_maps = ConvBlock(self.num_classes, 1, activation="lrelu", activation_first=True,
                         dtype=self.dtype, name="adv_head")(h)
    cls_maps = ConvBlock(self.num_classes, 1, activation="lrelu", activation_first=True,
                         dtype=self.dtype, name="cls_head")(h)
    adv_map = select_class(adv_maps.astype(jnp.float32), labels)
    cls_logits = cls_maps.astype(jnp.float32).mean(axis=(1, 2))
    return adv_map, cls_logits, h.astype(jnp.float32)

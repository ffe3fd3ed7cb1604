"""BalaGAN stage 1's contrastive encoder: its network, its training, its embeddings.

The modality encoder (Section 3.1, Appendix A.1) is a ResNet-18 with SimCLR's
projection head, trained from scratch with NT-Xent between two on-device
augmentations (`config.encoder.augmentations`) of every image of both domains;
`modalities` clusters its embeddings. Its run lives under `workdir/encoder/`:
  checkpoints/   encoder training state + data positions (resumable)
  tensorboard/   NT-Xent loss, contrastive accuracy, steps/s
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from etils import epath
from flax import struct
from jax.sharding import NamedSharding, PartitionSpec

from balagan_jax import augment as augment_lib
from balagan_jax import clustering
from balagan_jax.losses import nt_xent_loss
from i2i_jax import layers
from i2i_jax.data import domains, pipeline
from i2i_jax.errors import ConfigError
from i2i_jax.training import sharding, trainer
from i2i_jax.training.state import NetState, compute_dtype

# What spherical k-means clusters: the encoder's h ("representation") or z ("projection").
EMBEDDING_FEATURES = ("representation", "projection")
STREAMS = ("encoder_source", "encoder_target")  # checkpoint item names of the streams
_INIT_SALT = 0  # folded into config.seed

Dtype = Any

# ---------------------------------------------------------------------------
# The network.

# torchvision's ResNet init: kaiming_normal_(mode='fan_out', nonlinearity='relu').
_TORCHVISION_CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# Stem conv (kernel, stride) and whether a 3x3/2 max-pool follows.
STEMS = {"imagenet": (7, 2, True), "cifar": (3, 1, False)}


class BasicBlock(nn.Module):
  """ResNet-18's basic block (He et al., 2016) as in torchvision: two 3x3 conv-BN.

  The skip is a strided 1x1 conv + BN when the shape changes. Padding is explicit
  (1, 1) so stride-2 convs sample the same pixels as torchvision's.
  """

  features: int
  stride: int = 1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    conv = lambda f, k, s, p, name=None: nn.Conv(  # noqa: E731
        f, (k, k), (s, s), padding=((p, p), (p, p)), use_bias=False, dtype=self.dtype,
        kernel_init=_TORCHVISION_CONV_INIT, name=name)
    norm = lambda name=None: nn.BatchNorm(  # noqa: E731
        use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype, name=name)
    h = nn.relu(norm()(conv(self.features, 3, self.stride, 1)(x)))
    h = norm()(conv(self.features, 3, 1, 1)(h))
    if self.stride != 1 or x.shape[-1] != self.features:
      x = norm("downsample_bn")(conv(self.features, 1, self.stride, 0, "downsample_conv")(x))
    return nn.relu(h + x)


class ContrastiveEncoder(nn.Module):
  """Section 3.1's modality encoder: ResNet-18 from scratch + SimCLR projection head.

  As the authors' `ModalitiesEncoder`: h is ResNet-18's globally pooled 512-d feature
  (torchvision's `resnet18` minus `fc`), z = Linear(512) -> relu -> Linear(256). h is
  clustered; z goes to the NT-Xent loss. `stem` "imagenet" is torchvision's 7x7/2 conv +
  3x3/2 max-pool (the authors' 128px setting); "cifar" is SimCLR's 3x3/1 conv without
  max-pool, for small images. BatchNorm statistics live in `batch_stats` (torch's
  momentum 0.1 is flax's 0.9). Convs use torchvision's init; the projection's Dense
  layers keep flax's default (lecun normal, zero bias) rather than torch's uniform.
  """

  stem: str = "imagenet"
  projection_dim: int = 256
  stage_sizes: tuple[int, ...] = (2, 2, 2, 2)
  width: int = 64
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    if self.stem not in STEMS:
      raise ValueError(f"unknown stem {self.stem!r}; expected one of {tuple(STEMS)}")
    kernel, stride, max_pool = STEMS[self.stem]
    pad = kernel // 2
    h = nn.Conv(self.width, (kernel, kernel), (stride, stride), padding=((pad, pad), (pad, pad)),
                use_bias=False, dtype=self.dtype, kernel_init=_TORCHVISION_CONV_INIT,
                name="stem_conv")(x)
    h = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=self.dtype,
                     name="stem_bn")(h)
    h = nn.relu(h)
    if max_pool:
      h = nn.max_pool(h, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    for stage, num_blocks in enumerate(self.stage_sizes):
      for block in range(num_blocks):
        stride = 2 if stage > 0 and block == 0 else 1
        h = BasicBlock(self.width * 2 ** stage, stride, dtype=self.dtype)(h, train)
    rep = h.astype(jnp.float32).mean(axis=(1, 2))
    z = nn.relu(nn.Dense(rep.shape[-1], dtype=self.dtype, name="projection_0")(rep))
    z = nn.Dense(self.projection_dim, dtype=self.dtype, name="projection_1")(z)
    return rep, z.astype(jnp.float32)


# ---------------------------------------------------------------------------
# Training (SimCLR with the authors' settings, Appendix A.1).


class EncoderState(struct.PyTreeNode):
  """The encoder's parameters, BatchNorm statistics, Adam state and augmentation key."""

  net: NetState
  rng: jax.Array


def make_encoder(config: ml_collections.ConfigDict) -> ContrastiveEncoder:
  """The encoder that `config.encoder` describes (the paper's: ResNet-18, stage_sizes
  (2, 2, 2, 2))."""
  return layers.from_config(ContrastiveEncoder, config.encoder,
                            dtype=compute_dtype(config.compute_dtype))


def _optimizer(lr: float, weight_decay: float) -> optax.GradientTransformation:
  """Adam with PyTorch's `weight_decay`: wd * param added to the gradient (L2, not AdamW).

  The authors also wrap it in CosineAnnealingLR with T_max = the number of *images*
  stepped once per epoch after epoch 10, which leaves the rate at ~3e-4 in practice;
  the rate is therefore constant here.
  """
  return optax.chain(optax.add_decayed_weights(weight_decay), optax.adam(lr))


def _to_rgb(x: jax.Array) -> jax.Array:
  """Grey batches are repeated to RGB: the augmentations and the stem expect 3 channels."""
  return jnp.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


@functools.lru_cache(maxsize=8)
def _step_fn(model: ContrastiveEncoder, temperature: float, names: tuple[str, ...],
             jitter_strength: float, crop_scale: tuple[float, float]):
  """The step, cached per hyper-parameters so repeated runs reuse its compilation."""

  def step(state: EncoderState, batch):
    rng, key_i, key_j = jax.random.split(state.rng, 3)
    images = jnp.concatenate([_to_rgb(batch[name]) for name in STREAMS])
    augment = functools.partial(augment_lib.augment_batch, names=names,
                                jitter_strength=jitter_strength, crop_scale=crop_scale)
    x_i, x_j = augment(key_i, images), augment(key_j, images)

    def loss_fn(params):
      # Two forward passes, as the authors' `calc_nt_xent_loss`: each view's BatchNorm
      # normalises over that view's (global) batch, and the running averages move twice.
      stats = state.net.batch_stats
      (_, z_i), mutated = model.apply({"params": params, "batch_stats": stats}, x_i, train=True,
                                      mutable=["batch_stats"])
      (_, z_j), mutated = model.apply({"params": params, "batch_stats": mutated["batch_stats"]},
                                      x_j, train=True, mutable=["batch_stats"])
      loss = nt_xent_loss(z_i, z_j, temperature)
      return loss, (mutated["batch_stats"], _contrastive_accuracy(z_i, z_j))

    (loss, (stats, accuracy)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.net.params)
    net = state.net.apply_gradients(grads, batch_stats=stats)
    return state.replace(net=net, rng=rng), {"loss": loss, "contrastive_accuracy": accuracy}

  return step


def make_step(config: ml_collections.ConfigDict):
  """The contrastive step `(EncoderState, {"image": ...}) -> (state, metrics)`."""
  enc = config.encoder
  return _step_fn(make_encoder(config), float(enc.temperature), tuple(enc.augmentations),
                  float(enc.jitter_strength), tuple(enc.crop_scale))


def _contrastive_accuracy(z_i: jax.Array, z_j: jax.Array) -> jax.Array:
  """How often a view's most similar other view is its positive (SimCLR's top-1)."""
  n = z_i.shape[0]
  z = clustering.l2_normalize(jnp.concatenate([z_i, z_j]).astype(jnp.float32))
  sims = jnp.where(jnp.eye(2 * n, dtype=bool), -jnp.inf, z @ z.T)
  return jnp.mean(jnp.argmax(sims, axis=-1) == (jnp.arange(2 * n) + n) % (2 * n))


def _check_same_shape(config) -> None:
  src, tgt = config.data.source, config.data.target
  if src.image_size != tgt.image_size or src.channels not in (1, 3) or tgt.channels not in (1, 3):
    raise ConfigError(
        "the modality encoder trains on both domains in one batch, so they need the same "
        f"image_size and 1 or 3 channels; source ({domains.describe_domain(src)}): "
        f"{src.image_size}px x {src.channels}, target ({domains.describe_domain(tgt)}): "
        f"{tgt.image_size}px x {tgt.channels}")


def _split_batch(batch: int, num_source: int, num_target: int,
                 devices: int = 1) -> tuple[int, int]:
  """Global batch shares of A and B, proportional to the domain sizes, in multiples of
  `devices` (each share is split over all devices).

  The authors sample the union A + B uniformly; a fixed proportional share has the
  same expected composition. Each domain gets at least one image per device.
  """
  if batch < 2 * devices:
    raise ConfigError(f"config.encoder.batch_size must hold at least 2 images per device "
                      f"({devices} devices), got {batch}")
  units = batch // devices
  n_target = min(max(round(units * num_target / (num_source + num_target)), 1), units - 1)
  return batch - n_target * devices, n_target * devices


def _encoder_streams(config, num_source: int, num_target: int) -> dict[str, Any]:
  """One grain stream per domain (each with its own preprocessing), this host's part of
  the domain's share of the global batch (the step joins them: A's share, then B's)."""
  sharding.per_host_batch_size(config.encoder.batch_size, "config.encoder.batch_size")
  shares = _split_batch(int(config.encoder.batch_size), num_source, num_target,
                        jax.device_count())
  domains_ = (config.data.source, config.data.target)
  return {name: iter(pipeline.make_domain_dataset(
              pipeline.without_resampling(domain), batch_size=share // jax.process_count(),
              seed=config.seed + 100 + i))
          for i, (name, domain, share) in enumerate(zip(STREAMS, domains_, shares))}


def put_batch(batch, mesh) -> dict[str, jax.Array]:
  """Both domains' images, each split over the devices; the step joins them."""
  return sharding.shard_batch({name: batch[name]["image"] for name in STREAMS}, mesh)


def init_encoder_state(config, image_shape: tuple[int, int, int]) -> EncoderState:
  key = jax.random.fold_in(jax.random.key(config.seed), _INIT_SALT)
  enc = config.encoder
  return _init_fn(make_encoder(config), (float(enc.lr), float(enc.weight_decay)),
                  tuple(image_shape))(key)


@functools.lru_cache(maxsize=8)
def _init_fn(model: ContrastiveEncoder, tx_args: tuple[float, float],
             image_shape: tuple[int, int, int]):
  """The jitted init, cached so that repeated runs share one optimizer (a static field
  of the state) and with it the step's compilation."""
  tx = _optimizer(*tx_args)

  @jax.jit
  def init(key):
    init_key, rng = jax.random.split(key)
    variables = model.init(init_key, jnp.zeros((1, *image_shape[:2], 3)), train=False)
    return EncoderState(net=NetState.create(variables, tx), rng=rng)

  return init


def train_encoder(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains the contrastive encoder on all images of A and B; returns its variables.

  NT-Xent between two on-device augmentations (`config.encoder.augmentations`) of
  every image, data-parallel (state replicated, batch sharded over the "data" mesh).
  Checkpoints go to `workdir/encoder/checkpoints`; a re-run with the same workdir
  resumes there, and a finished run (step == num_steps) is only restored.

  Returns:
    {"params", "batch_stats"} of `make_encoder(config)`, as host numpy arrays.
  """
  _check_same_shape(config)
  num_source = len(domains.build_source(config.data.source))
  num_target = len(domains.build_source(config.data.target))
  enc = config.encoder
  image_shape = (config.data.source.image_size, config.data.source.image_size, 3)
  schedule = trainer.Schedule(num_steps=enc.num_steps, log_every=max(int(enc.log_every), 1),
                              checkpoint_every=enc.checkpoint_every,
                              max_to_keep=config.max_to_keep)
  stage = trainer.Trainer(epath.Path(workdir) / "encoder",
                          init_encoder_state(config, image_shape),
                          _encoder_streams(config, num_source, num_target), schedule)
  if stage.start_step:
    logging.info("Modality encoder: resumed from step %d of %d.", stage.start_step,
                 enc.num_steps)
  if not stage.finished:
    logging.info("Modality encoder: training on %d source + %d target images, steps %d -> %d.",
                 num_source, num_target, stage.start_step, enc.num_steps)
  state = stage.run(make_step(config), put_batch,
                    hparams={"encoder": enc.to_dict(), "seed": config.seed})
  return jax.device_get(state.net.variables)


# ---------------------------------------------------------------------------
# Embedding.


class Embedder:
  """Jitted eval-mode encoder over this host's devices, variables placed once.

  Every host embeds every image itself (local mesh), so all hosts cluster the same
  embeddings without any cross-host traffic.
  """

  def __init__(self, encoder_variables, config):
    self.mesh = sharding.make_data_mesh(jax.local_devices())
    n_dev = self.mesh.devices.size
    self.chunk = -(-max(int(config.encoder.batch_size), 1) // n_dev) * n_dev
    self.variables = jax.device_put(jax.device_get(encoder_variables),
                                    sharding.replicated_sharding(self.mesh))
    features = config.modalities.features
    if features not in EMBEDDING_FEATURES:
      raise ConfigError(f"unknown config.modalities.features {features!r}; expected one of "
                        f"{EMBEDDING_FEATURES}")
    self.apply = _embed_fn(make_encoder(config), features)
    self._batch_sharding = NamedSharding(self.mesh, PartitionSpec(sharding.DATA_AXIS))

  def __call__(self, images) -> np.ndarray:
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
      raise ConfigError(f"expected (N, H, W, 1 or 3) images in [-1, 1], got {images.shape}")
    out = []
    for start in range(0, len(images), self.chunk):
      part = images[start:start + self.chunk]
      n = len(part)
      if n < self.chunk:  # pad to one compiled shape
        part = np.concatenate([part, np.zeros((self.chunk - n, *part.shape[1:]), part.dtype)])
      h = self.apply(self.variables, jax.device_put(part, self._batch_sharding))
      out.append(np.asarray(jax.device_get(h))[:n])
    if not out:
      return np.zeros((0, 0), np.float32)
    return np.concatenate(out)


@functools.lru_cache(maxsize=8)
def _embed_fn(model: ContrastiveEncoder, features: str):
  @jax.jit
  def apply(variables, x):
    h, z = model.apply(variables, _to_rgb(x), train=False)
    return clustering.l2_normalize((h if features == "representation" else z).astype(jnp.float32))

  return apply


def embed(encoder_variables, config: ml_collections.ConfigDict, images) -> np.ndarray:
  """L2-normalised embeddings (N, d) of images (N, H, W, C) in [-1, 1].

  By `config.modalities.features`: "representation" is h, the globally pooled
  ResNet-18 feature, which BalaGAN clusters (the authors' `extract_modalities.py`
  keeps the first output of the encoder); "projection" is z, on whose cosine
  similarities NT-Xent trains. The encoder runs in eval mode (BatchNorm running
  averages), batched by `config.encoder.batch_size`.
  """
  return Embedder(encoder_variables, config)(images)

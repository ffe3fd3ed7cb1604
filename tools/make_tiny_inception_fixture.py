"""Writes the PyTorch fixtures of tests/test_inception.py (needs torch, torchvision, pytorch-fid).

Run it in a separate environment, not the project's:

  python3 -m venv /tmp/torchenv
  /tmp/torchenv/bin/pip install torch torchvision pytorch-fid
  /tmp/torchenv/bin/python tools/make_tiny_inception_fixture.py --out_dir=tests/data

It writes
  tiny_fid_inception.pth: torch.save'd state_dict of pytorch-fid's FID Inception
    with every channel count divided by --divisor (random weights, fixed seed);
  tiny_fid_inception_features.npz: images (uint8; the network sees x/127.5 - 1),
    the pool3 features pytorch-fid's InceptionV3 computes for them at --resize_to,
    and a bilinear downsampling case of F.interpolate;
  torch_tensors_{zip,legacy}.pth: a few tensors of several dtypes, views and
    strides, in both of torch.save's formats.
"""

import argparse
import collections
import pathlib

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.models.inception as tv_inception
from pytorch_fid import inception as pf_inception


def scale_torchvision_widths(divisor: int) -> None:
  """Divides every BasicConv2d's channels (but the RGB input) by `divisor`.

  torchvision's Inception blocks look BasicConv2d up when they are built, so
  pytorch-fid's network comes out uniformly narrower with unchanged names.
  """
  base = tv_inception.BasicConv2d

  class ScaledBasicConv2d(base):

    def __init__(self, in_channels, out_channels, **kwargs):
      in_channels = in_channels if in_channels == 3 else in_channels // divisor
      super().__init__(in_channels, out_channels // divisor, **kwargs)

  tv_inception.BasicConv2d = ScaledBasicConv2d


def random_fid_inception():
  """pytorch_fid.inception.fid_inception_v3 without its weight download."""
  inception = pf_inception._inception_v3(num_classes=1008, aux_logits=False, weights=None)
  inception.Mixed_5b = pf_inception.FIDInceptionA(192, pool_features=32)
  inception.Mixed_5c = pf_inception.FIDInceptionA(256, pool_features=64)
  inception.Mixed_5d = pf_inception.FIDInceptionA(288, pool_features=64)
  inception.Mixed_6b = pf_inception.FIDInceptionC(768, channels_7x7=128)
  inception.Mixed_6c = pf_inception.FIDInceptionC(768, channels_7x7=160)
  inception.Mixed_6d = pf_inception.FIDInceptionC(768, channels_7x7=160)
  inception.Mixed_6e = pf_inception.FIDInceptionC(768, channels_7x7=192)
  inception.Mixed_7b = pf_inception.FIDInceptionE_1(1280)
  inception.Mixed_7c = pf_inception.FIDInceptionE_2(2048)
  return inception


def build_model(divisor: int, seed: int, calibration_images: torch.Tensor):
  """pytorch-fid's InceptionV3([3]) with random, non-trivial weights and BN statistics.

  BatchNorm statistics come from a forward pass in train mode, so activations stay
  of order one through the depth; then the BN affine parameters are randomised.
  """
  torch.manual_seed(seed)
  if divisor != 1:
    scale_torchvision_widths(divisor)
  inception = random_fid_inception()
  pf_inception.fid_inception_v3 = lambda: inception
  model = pf_inception.InceptionV3([3], resize_input=False, normalize_input=True)
  batch_norms = [m for m in inception.modules() if isinstance(m, torch.nn.BatchNorm2d)]
  for bn in batch_norms:
    bn.momentum = None  # cumulative average: one pass gives the batch statistics
    bn.reset_running_stats()
  model.train()
  with torch.no_grad():
    model(calibration_images)
    for bn in batch_norms:
      bn.weight.uniform_(0.5, 1.5)
      bn.bias.normal_(0.0, 0.2)
  model.eval()
  return model, inception


def features(model, images_u8: np.ndarray, resize_to: int) -> np.ndarray:
  """pytorch-fid's forward at `resize_to`: F.interpolate(bilinear), then 2x - 1, blocks."""
  x = torch.from_numpy(images_u8).permute(0, 3, 1, 2).float() / 255.0
  x = F.interpolate(x, size=(resize_to, resize_to), mode="bilinear",
                    align_corners=False)
  with torch.no_grad():
    return model(x)[0][:, :, 0, 0].numpy()


def test_images(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
  """Smooth colour gradients with noise: uint8, (n, size, size, 3)."""
  yy, xx = np.mgrid[0:size, 0:size] / size
  out = []
  for _ in range(n):
    a, b, c = rng.uniform(-1, 1, size=(3, 3))
    smooth = a * xx[..., None] + b * yy[..., None] + c
    out.append(smooth + 0.3 * rng.normal(size=(size, size, 3)))
  return np.clip((np.stack(out) + 1) * 127.5, 0, 255).astype(np.uint8)


def save_format_cases(out_dir: pathlib.Path) -> None:
  """Tensors whose values the test recomputes with numpy: arange-based views."""
  base = torch.arange(24, dtype=torch.float32)
  cases = collections.OrderedDict(
      offset_view=base[2:14].view(3, 4),
      transposed=base.view(4, 6).t(),
      float64=torch.arange(6, dtype=torch.float64).view(2, 3) / 4,
      float16=torch.arange(5, dtype=torch.float16) / 2,
      int64_scalar=torch.tensor(7, dtype=torch.int64),
      int32=torch.arange(-3, 3, dtype=torch.int32),
      uint8=torch.arange(250, 256, dtype=torch.uint8),
      bool=torch.tensor([True, False, True]),
      empty=torch.zeros(0, 3),
  )
  torch.save(cases, out_dir / "torch_tensors_zip.pth")
  torch.save(cases, out_dir / "torch_tensors_legacy.pth", _use_new_zipfile_serialization=False)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out_dir", default="tests/data")
  parser.add_argument("--divisor", type=int, default=16)
  parser.add_argument("--resize_to", type=int, default=80)
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  out_dir = pathlib.Path(args.out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)

  rng = np.random.default_rng(args.seed)
  calibration = test_images(rng, 8, args.resize_to)
  calibration = torch.from_numpy(calibration).permute(0, 3, 1, 2).float() / 255.0
  model, inception = build_model(args.divisor, args.seed, calibration)
  state = collections.OrderedDict(
      (k, v) for k, v in inception.state_dict().items() if not k.startswith("fc."))
  torch.save(state, out_dir / "tiny_fid_inception.pth")

  images = test_images(rng, 4, 48)  # upsampled to resize_to
  small = test_images(rng, 1, 23)
  resized = F.interpolate(torch.from_numpy(small).permute(0, 3, 1, 2).float(), size=(9, 9),
                          mode="bilinear", align_corners=False)
  np.savez(out_dir / "tiny_fid_inception_features.npz",
           images=images, features=features(model, images, args.resize_to),
           divisor=args.divisor, resize_to=args.resize_to,
           downsample_input=small, downsample_output=resized.permute(0, 2, 3, 1).numpy())
  save_format_cases(out_dir)
  print(f"wrote {out_dir}: {sum(v.numel() for v in state.values())} weights")


if __name__ == "__main__":
  main()

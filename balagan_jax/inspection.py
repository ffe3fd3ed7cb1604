"""BalaGAN stage 1's inspection: what the found modalities look like.

`write_inspection` writes, under `workdir/modalities/`, clusters.png (row c = samples
of modality c), summary.json (sizes, and the clusters' quality against labels where
the source has them) and both again to TensorBoard.
"""

import json
from typing import Any

import jax
import numpy as np
from absl import logging
from etils import epath

from i2i_jax import images
from i2i_jax.data import pipeline
from i2i_jax.training.writers import MetricWriter

SUMMARY_FILE = "summary.json"
GRID_FILE = "clusters.png"
_GRID_SALT = 3  # folded into config.seed


def _grid_rows(config, mods, domain_sources) -> list[np.ndarray]:
  """Up to `grid_samples` random images of each modality, one row per modality.

  A modality without images (possible only for assignment files) gets an empty row,
  so row c always shows modality c.
  """
  rng = np.random.default_rng([config.seed, _GRID_SALT])
  n = max(int(config.modalities.grid_samples), 1)
  chosen = [rng.permutation(np.flatnonzero(
                (mods.source_labels if c < mods.k_source else mods.target_labels) == c))[:n]
            for c in range(mods.num_modalities)]
  rows = []
  for domain, source, classes in ((config.data.source, domain_sources[0], range(mods.k_source)),
                                  (config.data.target, domain_sources[1],
                                   range(mods.k_source, mods.num_modalities))):
    wanted = np.unique(np.concatenate([chosen[c] for c in classes]))
    loaded = pipeline.load_records(domain, source, wanted, config.seed)  # every domain has images
    rows.extend(loaded[np.searchsorted(wanted, chosen[c])] for c in classes)
  return rows


def write_inspection(config, workdir: str, mods, domain_sources,
                     quality: dict[str, Any] | None = None) -> None:
  """clusters.png (row c = samples of modality c) + summary.json (with `quality`, see
  `clustering_quality`, where given) + the grid and summary in TensorBoard."""
  if jax.process_index() != 0:
    return
  out_dir = epath.Path(workdir) / "modalities"
  out_dir.mkdir(parents=True, exist_ok=True)
  mods.save_summary(out_dir / SUMMARY_FILE, quality)
  rows = _grid_rows(config, mods, domain_sources)
  if len({r.shape[1:3] for r in rows}) == 1:
    grids = {"modalities": images.make_grid(rows)}
  else:  # domains of different sizes (possible without the encoder): one grid each
    logging.warning("Source and target images differ in size; writing one grid per domain.")
    grids = {"modalities": images.make_grid(rows[:mods.k_source]),
             "modalities_target": images.make_grid(rows[mods.k_source:])}
  for tag, grid in grids.items():
    name = GRID_FILE if tag == "modalities" else GRID_FILE.replace(".png", "_target.png")
    images.save_png(out_dir / name, grid)
  # Its own event directory: tensorboardX names event files by the second, so a writer
  # opened on the same directory within that second (stage 2's) would replace this file.
  with MetricWriter(out_dir / "tensorboard") as writer:
    writer.write_images(0, grids)
    writer.write_texts(0, {"modalities/summary": json.dumps(mods.summary(quality))})

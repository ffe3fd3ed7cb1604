"""BalaGAN: latent modalities of the rich domain, then one translator between them all.

Stage 1 (modalities):
  encoder         the contrastive encoder: network, training, embeddings
  augment         its on-device SimCLR augmentations
  clustering      spherical k-means and the paper's choice of k
  modalities      `Modalities` and how they are found (clusters, labels, a file)
  inspection      clusters.png and summary.json of the modalities found
Stage 2 (translation):
  models          FUNIT's generator and discriminator with BalaGAN's classifier head
  losses          the GAN, reconstruction, feature-matching, R1 and NT-Xent losses
  method          `BalaGAN`: networks from the config, `TrainState`, the jitted step
  train           both stages, the content/reference streams, on the shared trainer
  evaluate        sample grids, the `Evaluator`, and the evaluation CLI
  translate       reference-guided translation CLI, and `load_model` for a trained run
  main            the training CLI
  default_config  the base config that configs/ start from
"""

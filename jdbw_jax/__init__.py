"""JD-BW: a joint discriminator with batch weight (unpaired translation with mass shift).

  models          noisy generators, the joint discriminator, the weighting networks
  batch_weight    the paper's pair weights, clipping and weighted critic gap
  method          `JDBW`: networks from the config, `TrainState`, the jitted step
                  (Algorithms 1 and 2)
  train           JD-BW's streams and `train_and_evaluate` on the shared trainer
  evaluate        sample grids, the `Evaluator`, and the evaluation CLI
  translate       the translation CLI, and `load_model` for a trained run
  main            the training CLI
  default_config  the base config that configs/ start from
"""

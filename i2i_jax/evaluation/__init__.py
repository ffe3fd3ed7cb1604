"""Evaluation: how translations are scored, offline and against published numbers.

  metrics           FID, KID, diversity, class matching, clustering scores
  inception         the FID Inception-v3 and its feature extractor
  torch_checkpoint  reads PyTorch checkpoints (pytorch-fid's weights) without torch
  classifier        the small domain classifier: judge and "domain" features
  evaluators        what both methods' evaluators share: feature spaces, real-image
                    features, cached classifiers, metrics.json, the CLI flags
"""

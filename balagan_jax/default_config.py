"""Base BalaGAN configuration; the files in configs/ start from it.

Numbers follow the paper (Sections 3-4, appendices) and, where it is silent, the
authors' code (github.com/orpatashnik/BalaGAN: configs/dog2wolf.yaml, gan_trainer.py)
and its FUNIT upstream (github.com/NVlabs/FUNIT: configs/funit_animals.yaml): RMSprop
with weight decay 1e-4, lr 1e-4 for G and D, loss weights gan 1 / reconstruction 0.1 /
feature matching 1, R1 weight 10, generator EMA 0.999, nf 64, 10 discriminator blocks.
"""

import ml_collections

from i2i_jax.data.domains import default_domain_config


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.stage = "all"  # "all", "modalities" (encoder + clustering) or "translation"

  config.data = ml_collections.ConfigDict()
  config.data.source = default_domain_config()  # A: the rich domain
  config.data.target = default_domain_config()  # B: the poor domain
  for domain in (config.data.source, config.data.target):
    domain.image_size = 128
    domain.channels = 3
    domain.augment = "resize_crop"
    domain.resize = 140  # FUNIT/BalaGAN: shorter side to 140, random 128 crop
    domain.flip = True
    domain.label_key = ""  # labels only for the ground-truth-modalities ablation

  # Stage 1: contrastive encoder (SimCLR, Appendix A/B).
  config.encoder = ml_collections.ConfigDict()
  config.encoder.batch_size = 256
  config.encoder.lr = 3e-4
  config.encoder.weight_decay = 1e-6
  config.encoder.temperature = 0.5
  config.encoder.projection_dim = 256
  config.encoder.width = 64  # ResNet-18 base width
  config.encoder.stem = "imagenet"  # "imagenet" (7x7/2 + max pool) or "cifar" (3x3)
  config.encoder.num_steps = 20_000
  # The paper's style set; see balagan_jax.augment for the content/style variants.
  config.encoder.stage_sizes = (2, 2, 2, 2)  # ResNet-18
  config.encoder.augmentations = ("crop", "horizontal_flip", "color_jitter", "grayscale", "blur")
  config.encoder.jitter_strength = 1.0
  config.encoder.crop_scale = (0.08, 1.0)  # "crop"'s area fraction range (SimCLR's)
  config.encoder.log_every = 100
  config.encoder.checkpoint_every = 1000

  # Clustering into modalities (Section 3.1).
  config.modalities = ml_collections.ConfigDict()
  config.modalities.k_source = 0  # 0: the paper's rule, smallest k with |B| >= |A| / k
  config.modalities.k_target = 1  # 1: imbalanced setting; > 1: balanced (cluster B too)
  # Which encoder output is clustered: "representation" (h, the pooled ResNet feature,
  # as the authors) or "projection" (z, the space NT-Xent shapes).
  config.modalities.features = "representation"
  config.modalities.kmeans_iters = 50
  config.modalities.kmeans_restarts = 5
  # Ablations: "clusters" (default), "labels" (ground truth labels as modalities, needs
  # label_key), or a path to an assignment file (.npz with "source" [and "target"]).
  config.modalities.assignment = "clusters"
  config.modalities.grid_samples = 16  # images per cluster in the inspection grid

  # Stage 2: translation network (Section 3.2, FUNIT upstream).
  config.model = ml_collections.ConfigDict()
  config.model.nf = 64
  config.model.nf_mlp = 256
  config.model.latent_dim = 64
  config.model.num_mlp_blocks = 3
  config.model.num_res_blocks = 2
  config.model.num_downsamples_content = 3
  config.model.num_downsamples_style = 4
  config.model.d_nf = 64
  config.model.d_num_res_blocks = 10

  # How content and reference images are drawn (each stream independently):
  # "images": every training image equally likely, as the authors' two shuffled loaders
  #   over A + B; a modality comes as often as it holds images (AFD, 10,000 dogs in 40
  #   modalities + 1,000 wolves: a wolf in 1 of 11 draws).
  # "modalities": every modality with probability 1/(k+1), so all (k+1)^2 pairs come
  #   equally often whatever the cluster sizes (a reading of Section 3.2); AFD: a wolf
  #   in 1 of 41 draws, while the images of small clusters repeat often.
  config.pair_sampling = "images"
  config.batch_size = 10  # the paper's (the released config uses 3)
  config.num_steps = 100_000
  config.optim = ml_collections.ConfigDict()
  config.optim.lr_g = 1e-4
  config.optim.lr_d = 1e-4
  config.optim.weight_decay = 1e-4
  config.optim.rmsprop_decay = 0.99  # PyTorch RMSprop's alpha
  config.optim.eps = 1e-8
  config.ema_decay = 0.999

  config.loss = ml_collections.ConfigDict()
  config.loss.gan_w = 1.0
  config.loss.r_w = 0.1  # reconstruction
  config.loss.fm_w = 1.0  # feature matching
  config.loss.cls_w = 1.0  # Dcls cross-entropy (lambda_CE; not given: 1)
  config.loss.reg_w = 10.0  # R1 (FUNIT's trainer)
  config.use_classifier_head = True  # ablation: False = without Dcls
  config.transductive = True  # ablation: False = target not in training (FUNIT)
  config.compute_dtype = "auto"  # bf16 compute on GPU/TPU, float32 on CPU; params fp32

  config.log_every = 100
  config.sample_every = 2000
  config.checkpoint_every = 2000
  config.max_to_keep = 3
  # A step with non-finite losses/gradients is always skipped; then "skip" trains on,
  # "restore" goes back to the last checkpoint (at most max_restores times), "stop" ends.
  config.nonfinite = "skip"
  config.max_restores = 3
  config.num_samples = 8

  # Periodic evaluation of A -> B (balagan_jax.evaluate runs the same on a checkpoint).
  config.eval_every = 10_000  # FID/KID, diversity, class matching; 0 = off
  config.num_eval = 1000  # translations, each a source of A with a reference of B
  config.eval = ml_collections.ConfigDict()
  # A classifier of all modalities of both domains gives the "domain" features of
  # FID/KID/diversity (works without labels); where both domains carry the same labels a
  # classifier of B's labels judges class matching. 0 = neither.
  config.eval.classifier_steps = 2000
  config.eval.classifier_batch = 128
  # The class-matching judge learns from B's images (-1), or, where B is a capped subset
  # of a larger labelled set (data.target.max_records), from that many of the set's
  # images (0: all): a judge of a few hundred images misreads unseen ones, and class
  # matching would measure the judge. The translator sees B either way.
  config.eval.judge_max_records = -1
  # pytorch-fid's pt_inception-2015-12-05-6726825d.pth (or .npz): Inception scores too.
  config.eval.inception_weights = ""
  config.eval.kid_subset_size = 1000  # torch-fidelity's; capped at the sample counts
  config.eval.batch_size = 100  # images per translation / feature-extraction call
  # Diversity: each of these sources is translated with each of these references.
  config.eval.diversity_sources = 50
  config.eval.diversity_references = 10
  return config

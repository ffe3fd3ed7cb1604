"""The authors' PyTorch BalaGAN trainer on the offline digits demo, beside balagan_jax.

Why: the demo (configs/balagan_digits_demo.py) gives coloured noise after 1,200 steps.
Training the authors' own `GANTrainer` (../shared/anchor/balagan_torch, unmodified) on
the same images, sizes and modality labels tells a recipe problem (FUNIT's lr and
loss weights, tuned for 100k iterations) from a bug of the port: if theirs is noise
too, it is the recipe.

Three steps, each in its own environment (torch must not enter the JAX venv):

  # 1. the demo's images, labels, evaluation picks and sample-grid inputs -> .npz
  .venv/bin/python benchmarks/quality/anchor_balagan_digits.py export \
      --data=/tmp/anchor_cmp/data.npz
  # 2. their trainer (dis_update then gen_update, two shuffled loaders over A u B)
  /work/torchvenv/bin/python benchmarks/quality/anchor_balagan_digits.py train \
      --data=/tmp/anchor_cmp/data.npz --out=/tmp/anchor_cmp/torch [--iters=1200 --r_w=0.1 ...]
  # 3. our side, same modalities (checkpoints kept at 300, 600, 900, 1200)
  .venv/bin/python -m balagan_jax.main --config=configs/balagan_digits_demo.py \
      --workdir=/tmp/anchor_cmp/ours --config.modalities.assignment=labels \
      --config.num_steps=1200 --config.eval_every=300 --config.sample_every=300 \
      --config.checkpoint_every=300 --config.max_to_keep=5
  # 4. class matching by the demo's judge (--ours's own), of their runs and of our
  #    run's EMA and non-EMA checkpoints
  .venv/bin/python benchmarks/quality/anchor_balagan_digits.py score \
      --data=/tmp/anchor_cmp/data.npz --runs=/tmp/anchor_cmp/torch --ours=/tmp/anchor_cmp/ours

One step on identical weights (a bug would show here, without GAN noise): `step_torch`
saves their initial weights, one D + G step's losses, gradients and updated weights on a
fixed batch (float32, and float64 from the same weights); `step_compare` loads the
weights into balagan_jax, takes the same step and prints both against float64:

  /work/torchvenv/bin/python benchmarks/quality/anchor_balagan_digits.py step_torch \
      --data=/tmp/anchor_cmp/data.npz --out=/tmp/anchor_cmp/step
  .venv/bin/python benchmarks/quality/anchor_balagan_digits.py step_compare \
      --data=/tmp/anchor_cmp/data.npz --out=/tmp/anchor_cmp/step

Modalities: A's ground-truth digits (k_source 10) and one for all of B (class 10), so
the contrastive stage 1 is not part of the comparison. Their EMA (`gen_test`) decays
with 0.999, hard-coded in `update_average`; the demo uses 0.95, so `train` also keeps
a 0.95 copy (their `update_average` with beta=0.95) and saves the raw `gen` too.
Grid rows: sources, references, G(x, y) of gen_test, of the 0.95 EMA and of gen, then
gen's reconstructions G(x, x).
"""

import argparse
import copy
import json
import os
import pathlib
import sys
import time
import types

import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
ANCHOR = REPO_ROOT.parent / "shared" / "anchor" / "balagan_torch"
DEMO_CONFIG = "configs/balagan_digits_demo.py"
TARGET_MODALITY = 10  # k_source = 10 digits, then B
# Their loss attributes (gan_trainer.py) and the balagan_jax metric each corresponds to.
LOSSES = {"loss_gen_total": "g_loss", "loss_gen_adv": "g_adv", "loss_gen_recon_x": "g_rec",
          "loss_gen_recon_c": None, "loss_gen_recon_s": None, "loss_dis_total": None,
          "loss_dis_fake_adv": "d_fake", "loss_dis_real_adv": "d_real", "loss_dis_reg": "r1",
          "loss_dis_cls": "d_cls", "accuracy_gen_adv": None, "accuracy_dis_adv": None}
GENERATORS = ("gen_test", "gen_ema095", "gen")  # EMA 0.999 (theirs), EMA 0.95, raw


def demo_config():
  """The demo config, as `common.load_config` reads it (imports JAX: not in `train`)."""
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
  import common  # pylint: disable=import-outside-toplevel
  return common.load_config(DEMO_CONFIG)


def export(args):
  """A and B whole (the pipeline's deterministic 'pad' preprocessing, [-1, 1], NHWC),
  and the sources/references our Evaluator and sample grid pick, so both sides are
  judged on the same 300 translations."""
  from balagan_jax import evaluate  # pylint: disable=import-outside-toplevel
  config = demo_config()
  import common  # pylint: disable=import-outside-toplevel  (on the path: demo_config)
  a = common.every_record(config.data.source, config.seed)
  b = common.every_record(config.data.target, config.seed)
  sources, references = evaluate.evaluation_pairs(config, config.num_eval)
  grid_x, grid_y = evaluate.sample_inputs(config, config.num_samples)
  pathlib.Path(args.data).parent.mkdir(parents=True, exist_ok=True)
  np.savez_compressed(
      args.data, a_images=a["image"], a_labels=a["label"], b_images=b["image"],
      b_labels=b["label"], eval_sources=sources["image"], eval_source_labels=sources["label"],
      eval_references=references["image"], eval_reference_labels=references["label"],
      grid_sources=grid_x, grid_references=grid_y)
  print(f"wrote {args.data}: A {a['image'].shape} labels {np.bincount(a['label'])}, "
        f"B {b['image'].shape}, eval {sources['image'].shape[0]} pairs, grid {len(grid_x)}")


def torch_config(args):
  """dog2wolf.yaml with the demo's sizes (balagan_digits_demo.py) and this run's recipe."""
  import torch  # pylint: disable=import-outside-toplevel
  import yaml  # pylint: disable=import-outside-toplevel
  with open(os.path.join(args.anchor, "configs", "dog2wolf.yaml")) as f:
    cfg = yaml.safe_load(f)
  cfg["device"] = torch.device("cpu")
  cfg["modalities"].update(k_source=10, k_target=1)
  gan = cfg["gan"]
  gan.update(max_iter=args.iters, batch_size=args.batch, lr_gen=args.lr, lr_dis=args.lr,
             weight_decay=1e-4, init="kaiming", gan_w=1, fm_w=1, r_w=args.r_w)
  gan["gen"].update(nf=16, nf_mlp=64, latent_dim=16, n_mlp_blks=3, n_res_blks=2,
                    n_downs_content=2, n_downs_class=4)
  gan["dis"].update(nf=16, n_res_blks=4)
  return cfg


def shuffled_batches(images, labels, batch, generator):
  """Their `DataLoader(shuffle=True, drop_last=True)`, epoch after epoch (train.py's
  `while` around `zip(source_loader, ref_loader)`)."""
  import torch  # pylint: disable=import-outside-toplevel
  n = len(images)
  while True:
    order = torch.randperm(n, generator=generator)
    for i in range(n // batch):
      idx = order[i * batch:(i + 1) * batch]
      yield images[idx], labels[idx]


def save_grid(path, rows):
  """Rows of (N, H, W, 3) images in [-1, 1] as one PNG, 2-pixel white gaps."""
  from PIL import Image  # pylint: disable=import-outside-toplevel
  rows = [np.round((np.clip(r, -1, 1) + 1) * 127.5).astype(np.uint8) for r in rows]
  n, h, w, c = rows[0].shape
  grid = np.full((len(rows) * (h + 2) + 2, n * (w + 2) + 2, c), 255, np.uint8)
  for i, row in enumerate(rows):
    for j, image in enumerate(row):
      grid[2 + i * (h + 2):2 + i * (h + 2) + h, 2 + j * (w + 2):2 + j * (w + 2) + w] = image
  Image.fromarray(grid).save(path)


def train(args):
  """Their GANTrainer, their loop; translations of the evaluation pairs at checkpoints."""
  import torch  # pylint: disable=import-outside-toplevel
  sys.path.insert(0, args.anchor)
  # gan_trainer imports utils for checkpoint listing only; their utils needs torchvision.
  sys.modules.setdefault("utils", types.SimpleNamespace(get_model_list=None))
  from gan_trainer import GANTrainer, update_average  # pylint: disable=import-outside-toplevel
  torch.set_num_threads(args.threads)
  torch.manual_seed(args.seed)
  data = np.load(args.data)
  nchw = lambda x: torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).float()
  images = nchw(np.concatenate([data["a_images"], data["b_images"]]))
  labels = torch.from_numpy(np.concatenate([
      data["a_labels"], np.full(len(data["b_images"]), TARGET_MODALITY)])).long()
  cfg = torch_config(args)
  trainer = GANTrainer(cfg)
  ema095 = copy.deepcopy(trainer.model.gen)
  gens = {"gen_test": trainer.model.gen_test, "gen_ema095": ema095, "gen": trainer.model.gen}
  content = shuffled_batches(images, labels, args.batch, torch.Generator().manual_seed(args.seed))
  reference = shuffled_batches(images, labels, args.batch,
                               torch.Generator().manual_seed(args.seed + 1))
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  checkpoints = sorted({int(c) for c in args.checkpoints.split(",")} | {args.iters})
  eval_x, eval_y = nchw(data["eval_sources"]), nchw(data["eval_references"])
  grid_x, grid_y = nchw(data["grid_sources"]), nchw(data["grid_references"])

  def translate(gen, x, y):
    """G(x, y) and G(x, x) in NHWC, in batches of 100."""
    with torch.no_grad():
      parts = []
      for i in range(0, len(x), 100):
        xs, ys = x[i:i + 100], y[i:i + 100]
        content_code = gen.enc_content(xs)
        parts.append((gen.decode(content_code, gen.enc_class_model(ys)),
                      gen.decode(content_code, gen.enc_class_model(xs))))
      return tuple(torch.cat(p).permute(0, 2, 3, 1).numpy() for p in zip(*parts))

  history = {k: [] for k in LOSSES}
  history["seconds"] = []
  eval_records = []
  print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(),
                    "ema_beta_gen_test": update_average.__defaults__[0],
                    "gan": {k: v for k, v in cfg["gan"].items()}}, default=str), flush=True)
  for it in range(1, args.iters + 1):
    start = time.perf_counter()
    source_data, ref_data = next(content), next(reference)
    trainer.dis_update(source_data, ref_data, cfg)
    trainer.gen_update(source_data, ref_data, cfg)
    update_average(ema095, trainer.model.gen, beta=0.95)
    for k in LOSSES:
      history[k].append(float(getattr(trainer, k).detach()))
    history["seconds"].append(time.perf_counter() - start)
    if it % args.log_every == 0:
      window = {k: round(float(np.mean(history[k][-args.log_every:])), 4) for k in LOSSES}
      print(f"iter {it}: s/it {np.mean(history['seconds'][-args.log_every:]):.3f} "
            f"{json.dumps(window)}", flush=True)
    if it in checkpoints:
      record = {"iteration": it}
      arrays = {}
      for name, gen in gens.items():
        translated, reconstructed = translate(gen, eval_x, eval_y)
        arrays[name] = translated
        record[f"eval_recon_l1_{name}"] = float(np.mean(np.abs(reconstructed
                                                               - data["eval_sources"])))
      np.savez_compressed(out / f"translations_{it:06d}.npz", **arrays)
      rows = [data["grid_sources"], data["grid_references"]]
      rows += [translate(gen, grid_x, grid_y)[0] for gen in gens.values()]
      rows.append(translate(trainer.model.gen, grid_x, grid_y)[1])  # G(x, x) of `gen`
      save_grid(out / f"grid_{it:06d}.png", rows)
      eval_records.append(record)
      print(f"checkpoint {it}: {json.dumps(record)}", flush=True)
  with open(out / "log.json", "w") as f:
    json.dump({"args": vars(args), "ema_beta_gen_test": update_average.__defaults__[0],
               "grid_rows": ["source", "reference"] + list(GENERATORS) + ["gen G(x, x)"],
               "history": history, "checkpoints": eval_records}, f)
  seconds = history["seconds"][10:] or [np.nan]
  print(f"mean s/it after 10 warm-up iterations: {np.mean(seconds):.4f}")


def window_mean(values, end, width=50):
  """Mean of per-iteration values over iterations end-width+1 .. end (1-based)."""
  return float(np.mean(values[max(end - width, 0):end]))


def ours_rows(workdir, data, judge, num_labels, steps):
  """balagan_jax run: eval/class_match (logged), g_rec over the last 50 steps, and the
  class match of its EMA and raw generators re-translated from its checkpoints."""
  import jax  # pylint: disable=import-outside-toplevel
  from balagan_jax import translate  # pylint: disable=import-outside-toplevel
  from i2i_jax.evaluation import classifier, metrics  # pylint: disable=import-outside-toplevel
  from i2i_jax.training import writers  # pylint: disable=import-outside-toplevel
  scalars = writers.read_event_scalars(os.path.join(workdir, "tensorboard"))
  rec = dict(scalars.get("g_rec", []))
  logged = dict(scalars.get("eval/class_match_a_to_b", []))
  rows = {}
  for step in steps:
    row = {"ours_logged_class_match": logged.get(step)}
    # Whatever log_every the run used: the values logged in (step - 50, step].
    windows = [value for s, value in rec.items() if step - 50 < s <= step]
    row["ours_g_rec"] = float(np.mean(windows)) if windows else None
    try:
      model, state = translate.load_model(workdir, step)
    except Exception as e:  # pylint: disable=broad-except
      print(f"ours step {step}: no checkpoint ({e})")
      rows[step] = row
      continue
    apply = jax.jit(model.translate)
    for key, params in (("ema", state.g_ema), ("g", state.g.params)):
      out = np.concatenate([np.asarray(apply(params, data["eval_sources"][i:i + 100],
                                             data["eval_references"][i:i + 100]))
                            for i in range(0, len(data["eval_sources"]), 100)])
      row[f"ours_class_match_{key}"] = metrics.class_matching_rate(
          classifier.predict(judge, out, num_labels), data["eval_source_labels"])
    rows[step] = row
  return rows


def score(args):
  """Class matching of every saved translation by the demo's judge (a classifier of
  B's digits, eval.classifier_steps steps), shared with the --ours run when it has one."""
  from balagan_jax import evaluate as evaluate_lib  # pylint: disable=import-outside-toplevel
  from i2i_jax.evaluation import classifier, metrics  # pylint: disable=import-outside-toplevel
  from i2i_jax.evaluation import evaluators  # pylint: disable=import-outside-toplevel
  config = demo_config()
  data = dict(np.load(args.data))
  num_labels = evaluate_lib.shared_label_classes(config)
  shape = data["eval_sources"].shape[1:]
  judge_path = args.judge
  if not judge_path:
    judge_path = os.path.join(args.ours, evaluate_lib.JUDGE_FILE) if args.ours else ""
    if not (judge_path and os.path.exists(judge_path)):
      judge_path = os.path.join(os.path.dirname(args.data), evaluate_lib.JUDGE_FILE)
  judge = evaluators.cached_classifier(
      judge_path, lambda: evaluate_lib.target_label_batches(config), num_labels, shape,
      steps=config.eval.classifier_steps, seed=config.seed)
  predict = lambda images: classifier.predict(judge, images, num_labels)
  judge_acc = classifier.accuracy(predict(data["eval_references"]),
                                  data["eval_reference_labels"])
  print(f"judge {judge_path}: accuracy on the evaluation references of B {judge_acc:.3f}")
  # What reconstruction L1 means here: an all-black output already scores this.
  black_l1 = float(np.mean(np.abs(data["eval_sources"] + 1)))
  print(f"L1 of an all-black image to the evaluation sources: {black_l1:.3f}")
  results = {"judge": judge_path, "judge_accuracy_b": judge_acc, "black_l1": black_l1,
             "runs": {}}
  for run in [r for r in args.runs.split(",") if r]:
    with open(os.path.join(run, "log.json")) as f:
      log = json.load(f)
    rows = []
    for record in log["checkpoints"]:
      it = record["iteration"]
      with np.load(os.path.join(run, f"translations_{it:06d}.npz")) as saved:
        row = {"iteration": it,
               "recon_x": window_mean(log["history"]["loss_gen_recon_x"], it),
               **{f"class_match_{g}": metrics.class_matching_rate(
                   predict(saved[g]), data["eval_source_labels"]) for g in GENERATORS},
               **{k: v for k, v in record.items() if k != "iteration"}}
      rows.append(row)
    seconds = log["history"]["seconds"][10:] or [np.nan]  # after 10 warm-up iterations
    results["runs"][run] = {"args": log["args"], "rows": rows,
                            "s_per_iter": float(np.mean(seconds))}
  steps = sorted({row["iteration"] for run in results["runs"].values() for row in run["rows"]})
  if args.ours:
    results["ours"] = {str(k): v for k, v in ours_rows(args.ours, data, judge, num_labels,
                                                         steps).items()}
  for run, res in results["runs"].items():
    a = res["args"]
    print(f"\n{run}: r_w {a['r_w']} lr {a['lr']} batch {a['batch']}, "
          f"{res['s_per_iter']:.3f} s/iter")
    header = ("iter", "ours g_rec", "ours CM ema", "ours CM g", "theirs recon_x",
              "CM gen_test(.999)", "CM ema .95", "CM gen", "eval L1 gen")
    print("  ".join(f"{h:>17}" for h in header))
    for row in res["rows"]:
      o = results.get("ours", {}).get(str(row["iteration"]), {})
      cells = (row["iteration"], o.get("ours_g_rec"), o.get("ours_class_match_ema"),
               o.get("ours_class_match_g"), row["recon_x"], row["class_match_gen_test"],
               row["class_match_gen_ema095"], row["class_match_gen"],
               row["eval_recon_l1_gen"])
      print("  ".join(f"{c:>17.3f}" if isinstance(c, float) else f"{str(c):>17}"
                      for c in cells))
  if "ours" in results:
    print("\nours, logged eval/class_match_a_to_b:",
          {k: v["ours_logged_class_match"] for k, v in results["ours"].items()})
  out = args.results or os.path.join(os.path.dirname(args.data), "results.json")
  with open(out, "w") as f:
    json.dump(results, f, indent=2)
  print(f"results in {out}")


def step_torch(args):
  """Their one D + G step on a fixed batch, in float32 and (same weights) float64."""
  import torch  # pylint: disable=import-outside-toplevel
  sys.path.insert(0, args.anchor)
  sys.modules.setdefault("utils", types.SimpleNamespace(get_model_list=None))
  from gan_trainer import GANTrainer  # pylint: disable=import-outside-toplevel
  torch.set_num_threads(args.threads)
  data = np.load(args.data)
  images = np.concatenate([data["a_images"], data["b_images"]])
  labels = np.concatenate([data["a_labels"], np.full(len(data["b_images"]), TARGET_MODALITY)])
  rng = np.random.default_rng(0)
  # Content from anywhere, references 5 of A and 3 of B: every loss term is non-trivial.
  ci = rng.choice(len(images), args.batch, replace=False)
  ri = np.concatenate([rng.choice(len(data["a_images"]), args.batch - 3, replace=False),
                       len(data["a_images"]) + rng.choice(len(data["b_images"]), 3,
                                                          replace=False)])
  pathlib.Path(args.out).mkdir(parents=True, exist_ok=True)
  init = None
  for dtype, name in ((torch.float32, "float32"), (torch.float64, "float64")):
    torch.manual_seed(args.seed)
    torch.set_default_dtype(dtype)
    trainer = GANTrainer(torch_config(args))
    nets = {"gen": trainer.model.gen, "dis": trainer.model.dis}
    if init is None:
      init = {f"{n}.{k}": p.detach().numpy().copy() for n, net in nets.items()
              for k, p in net.named_parameters()}
    with torch.no_grad():
      for n, net in {**nets, "gen_test": trainer.model.gen_test}.items():
        for k, p in net.named_parameters():
          p.copy_(torch.from_numpy(init[f"{'gen' if n == 'gen_test' else n}.{k}"]))
    tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2))).to(dtype)
    source = (tensor(images[ci]), torch.from_numpy(labels[ci]).long())
    reference = (tensor(images[ri]), torch.from_numpy(labels[ri]).long())
    cfg = torch_config(args)
    out = {"x": images[ci], "lx": labels[ci], "y": images[ri], "ly": labels[ri]}
    out.update({f"init/{k}": v for k, v in init.items()})
    trainer.dis_update(source, reference, cfg)
    out.update({f"grad/dis.{k}": p.grad.numpy().copy()
                for k, p in trainer.model.dis.named_parameters()})
    trainer.gen_update(source, reference, cfg)
    out.update({f"grad/gen.{k}": p.grad.numpy().copy()
                for k, p in trainer.model.gen.named_parameters()})
    out.update({f"post/{n}.{k}": p.detach().numpy().copy() for n, net in nets.items()
                for k, p in net.named_parameters()})
    out.update({f"loss/{k}": float(getattr(trainer, k).detach()) for k in LOSSES})
    np.savez(os.path.join(args.out, f"torch_{name}.npz"), **out)
  torch.set_default_dtype(torch.float32)
  print(f"wrote {args.out}/torch_float32.npz and torch_float64.npz")


def flax_path(name: str) -> tuple[str, list[str]]:
  """Their parameter name ("gen."/"dis." + module path) -> (network, our param path)."""
  net, rest = name.split(".", 1)
  rest, leaf = rest.rsplit(".", 1)
  leaf = {"weight": "kernel", "bias": "bias"}[leaf]
  conv = ["Conv_0", "Conv_0", leaf]  # ConvBlock > layers.Conv > nn.Conv
  patterns = {
      "gen": [(r"enc_content\.model\.(\d+)\.conv", lambda m: ["content_encoder",
                                                            f"ConvBlock_{m[1]}"] + conv),
              (r"enc_content\.model\.\d+\.model\.(\d+)\.model\.(\d+)\.conv",
               lambda m: ["content_encoder", f"ResBlock_{m[1]}", f"ConvBlock_{m[2]}"] + conv),
              (r"enc_class_model\.model\.(\d+)\.conv",
               lambda m: ["style_encoder", f"ConvBlock_{m[1]}"] + conv),
              (r"enc_class_model\.model\.\d+", lambda m: ["style_encoder"] + conv),
              (r"dec\.model\.0\.model\.(\d+)\.model\.(\d+)\.conv",
               lambda m: ["decoder", f"AdaINResBlock_{m[1]}", f"ConvBlock_{m[2]}"] + conv),
              # Sequential indices 1, 3 are the Upsamples.
              (r"dec\.model\.(\d+)\.conv",
               lambda m: ["decoder", f"ConvBlock_{(int(m[1]) - 1) // 2}"] + conv),
              (r"mlp\.model\.(\d+)\.fc", lambda m: ["mlp", f"Dense_{m[1]}", "Dense_0", leaf])],
      # cnn_f: conv, 2 blocks, pad, pool, 2 blocks (4 residual blocks).
      "dis": [(r"cnn_f\.0\.conv", lambda m: ["ConvBlock_0"] + conv),
              (r"cnn_f\.(\d+)\.conv_(\d)\.conv",
               lambda m: [f"ActFirstResBlock_{_dis_block(int(m[1]))}",
                          f"ConvBlock_{m[2]}"] + conv),
              (r"cnn_f\.(\d+)\.conv_s\.conv",
               lambda m: [f"ActFirstResBlock_{_dis_block(int(m[1]))}", "shortcut", leaf]),
              (r"cnn_c\.0\.conv", lambda m: ["adv_head"] + conv),
              (r"cnn_classifier\.0\.conv", lambda m: ["cls_head"] + conv)]}
  import re  # pylint: disable=import-outside-toplevel
  for pattern, path in patterns[net]:
    match = re.fullmatch(pattern, rest)
    if match:
      return net, path(match)
  raise KeyError(f"no balagan_jax parameter for {name}")


def _dis_block(index: int) -> int:
  """cnn_f index -> residual block number: 2 blocks, then reflect pad + pool, per pair."""
  return index - 1 - 2 * ((index - 1) // 4)


def step_compare(args):
  """Loads their weights into balagan_jax, takes the same step, compares with float64."""
  import jax  # pylint: disable=import-outside-toplevel
  from balagan_jax.method import BalaGAN  # pylint: disable=import-outside-toplevel
  t32, t64 = (dict(np.load(os.path.join(args.out, f"torch_{n}.npz")))
              for n in ("float32", "float64"))
  to_ours = lambda a: a.transpose(2, 3, 1, 0) if a.ndim == 4 else (a.T if a.ndim == 2 else a)
  model = BalaGAN(demo_config(), TARGET_MODALITY + 1, t32["x"].shape[1:])
  state = model.init_state(jax.random.key(0))
  params = {"gen": jax.tree_util.tree_map(np.asarray, state.g.params),
            "dis": jax.tree_util.tree_map(np.asarray, state.d.params)}
  names = [k[len("init/"):] for k in t32 if k.startswith("init/")]

  def node(tree, path):
    for key in path[:-1]:
      tree = tree[key]
    return tree, path[-1]

  for name in names:
    net, path = flax_path(name)
    parent, key = node(params[net], path)
    value = to_ours(t32["init/" + name])
    if parent[key].shape != value.shape:
      raise ValueError(f"{name} -> {path}: {parent[key].shape} vs {value.shape}")
    parent[key] = value
  counts = {net: len(jax.tree_util.tree_leaves(params[net])) for net in params}
  if len(names) != sum(counts.values()):
    raise ValueError(f"{len(names)} of their tensors for {counts} of ours")
  state = state.replace(g=state.g.replace(params=params["gen"]), g_ema=params["gen"],
                        d=state.d.replace(params=params["dis"]))
  batch = {"content": {"image": t32["x"], "label": t32["lx"].astype(np.int32)},
           "reference": {"image": t32["y"], "label": t32["ly"].astype(np.int32)}}
  new, (d_metrics, d_grads), (g_metrics, g_grads) = jax.jit(model.updates)(state, batch)
  metrics = {**d_metrics, **g_metrics}
  print(f"{'loss':18s} {'torch float64':>14s} {'torch float32':>14s} {'balagan_jax':>14s}")
  for theirs, ours in LOSSES.items():
    if ours:
      print(f"{theirs:18s} {t64['loss/' + theirs]:14.7f} {t32['loss/' + theirs]:14.7f} "
            f"{float(metrics[ours]):14.7f}")
  fm = lambda t: t["loss/loss_gen_recon_c"] + t["loss/loss_gen_recon_s"]
  print(f"{'g_fm (c + s)':18s} {fm(t64):14.7f} {fm(t32):14.7f} {float(metrics['g_fm']):14.7f}")
  rel = lambda a, b: float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))
  grads = {"gen": g_grads, "dis": d_grads}
  updated = {"gen": new.g.params, "dis": new.d.params}
  for net in ("dis", "gen"):
    errors, flips, total = [], [0, 0], 0
    for name in [n for n in names if n.startswith(net + ".")]:
      reference = to_ours(t64["grad/" + name])
      # Biases ahead of an instance norm have zero gradient in exact arithmetic.
      if np.linalg.norm(reference) < 1e-6:
        continue
      _, path = flax_path(name)
      parent, key = node(grads[net], path)
      errors.append((rel(to_ours(t32["grad/" + name]), reference), rel(parent[key], reference)))
      # RMSprop's first step is ~10 lr sign(g): compare update signs.
      sign64 = np.sign(to_ours(t64["post/" + name] - t64["init/" + name]))
      parent, key = node(updated[net], path)
      ours_delta = np.asarray(parent[key]) - to_ours(t32["init/" + name])
      flips[0] += int((np.sign(to_ours(t32["post/" + name] - t32["init/" + name]))
                       != sign64).sum())
      flips[1] += int((np.sign(ours_delta) != sign64).sum())
      total += sign64.size
    errors = np.asarray(errors)
    print(f"{net} gradients, relative L2 error to torch float64 over {len(errors)} tensors: "
          f"torch float32 median {np.median(errors[:, 0]):.1e} max {errors[:, 0].max():.1e}; "
          f"balagan_jax median {np.median(errors[:, 1]):.1e} max {errors[:, 1].max():.1e}")
    print(f"{net} first-step update signs unlike float64's: torch float32 {flips[0]}, "
          f"balagan_jax {flips[1]} of {total}")


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  sub = parser.add_subparsers(dest="step", required=True)
  p = sub.add_parser("export")
  p.add_argument("--data", required=True)
  p = sub.add_parser("train")
  p.add_argument("--data", required=True)
  p.add_argument("--out", required=True)
  p.add_argument("--anchor", default=str(ANCHOR))
  p.add_argument("--iters", type=int, default=1200)
  p.add_argument("--checkpoints", default="300,600,1200")
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--lr", type=float, default=1e-4, help="lr_gen = lr_dis")
  p.add_argument("--r_w", type=float, default=0.1)
  p.add_argument("--seed", type=int, default=0)
  # 1: on a shared 2-core machine two OpenMP threads ran slower than one.
  p.add_argument("--threads", type=int, default=1)
  p.add_argument("--log_every", type=int, default=50)
  p = sub.add_parser("score")
  p.add_argument("--data", required=True)
  p.add_argument("--runs", default="", help="comma-separated `train --out` folders")
  p.add_argument("--ours", default="", help="a balagan_jax workdir (labels modalities)")
  p.add_argument("--judge", default="", help="the judge's .msgpack (trained there if missing); "
                 "default --ours's, else one beside --data")
  p.add_argument("--results", default="")
  for name in ("step_torch", "step_compare"):
    p = sub.add_parser(name)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--anchor", default=str(ANCHOR))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--r_w", type=float, default=0.1)
    p.add_argument("--iters", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
  args = parser.parse_args()
  steps = {"export": export, "train": train, "score": score, "step_torch": step_torch,
           "step_compare": step_compare}
  steps[args.step](args)


if __name__ == "__main__":
  main()

"""Our character GPT beside nanoGPT's CPU shakespeare_char run, on one machine.

nanoGPT (github.com/karpathy/nanoGPT) is the peer, not a dependency: pass a
checkout (with data/shakespeare_char/prepare.py run on tiny shakespeare) and a
Python that has torch. Both runs are whole processes timed by wall clock
(imports, compilation, training, their periodic evaluations), one after the
other, nothing else on the cores:

  1. nanoGPT, its README's CPU command (4 layers, 4 heads, 128 wide, context
     64, batch 12, 2,000 iterations, no dropout), with its own validation
     estimate (20 random batches);
  2. ours, `experiments/shakespeare_char_transformer.py[:variant]`;
  3. both final models scored on the same windows: nanoGPT's validation text
     is the last 10% of tiny shakespeare, our validation and test splits (5%
     each), so each side is scored on those two splits' non-overlapping
     windows of 64 (our eval windows), mean per character.

  python benchmarks/nanogpt_side_by_side.py --nanogpt /tmp/nanogpt \
      --torch_python /tmp/venv_torch/bin/python --variants ,fast
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

from deeplearn import evaluate
from deeplearn.data.builders import tiny_shakespeare

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONTEXT = 64
NANOGPT_CPU = ["--device=cpu", "--compile=False", "--eval_iters=20", "--log_interval=100",
               f"--block_size={CONTEXT}", "--batch_size=12", "--n_layer=4", "--n_head=4",
               "--n_embd=128", "--max_iters=2000", "--lr_decay_iters=2000", "--dropout=0.0",
               "--wandb_log=False"]
# Run by the torch Python inside the nanoGPT checkout: its model, our windows.
SCORE_NANOGPT = """
import sys, numpy as np, torch
from model import GPT, GPTConfig
ckpt = torch.load(sys.argv[1], map_location="cpu")
model = GPT(GPTConfig(**ckpt["model_args"]))
model.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()})
model.eval()
total = count = 0
for path in sys.argv[2:]:
  w = torch.from_numpy(np.load(path).astype(np.int64))
  with torch.no_grad():
    for i in range(0, len(w), 256):
      x, y = w[i:i + 256, :-1].contiguous(), w[i:i + 256, 1:].contiguous()
      _, loss = model(x, y)
      total += loss.item() * y.numel(); count += y.numel()
print(total / count, count)
"""


def windows(split: str) -> np.ndarray:
  """Our eval windows of `split` as nanoGPT's ids (sorted chars, as ours)."""
  text = tiny_shakespeare.split_text(tiny_shakespeare.read_text())[split]
  vocab = sorted(set(tiny_shakespeare.read_text()))
  ids = np.searchsorted(np.array(vocab), np.array(list(text)))
  return np.lib.stride_tricks.sliding_window_view(ids, CONTEXT + 1)[::CONTEXT]


def timed(cmd, **kwargs):
  start = time.perf_counter()
  out = subprocess.run(cmd, check=True, capture_output=True, text=True, **kwargs)
  return time.perf_counter() - start, out.stdout + out.stderr


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--nanogpt", required=True, help="nanoGPT checkout")
  parser.add_argument("--torch_python", required=True, help="a Python with torch")
  parser.add_argument("--variants", default=",fast",
                      help="our config variants, comma-separated ('' = default)")
  parser.add_argument("--skip_nanogpt", action="store_true")
  args = parser.parse_args()
  tmp = tempfile.mkdtemp(prefix="side_by_side_")
  paths = []
  for split in ("validation", "test"):
    paths.append(os.path.join(tmp, f"{split}.npy"))
    np.save(paths[-1], windows(split))
  rows = []
  if not args.skip_nanogpt:
    out_dir = os.path.join(tmp, "nanogpt")
    wall, log = timed([args.torch_python, "train.py", "config/train_shakespeare_char.py",
                       *NANOGPT_CPU, f"--out_dir={out_dir}"], cwd=args.nanogpt)
    own = float(re.findall(r"step 2000: train loss [\d.]+, val loss ([\d.]+)", log)[-1])
    _, scored = timed([args.torch_python, "-c", SCORE_NANOGPT,
                       os.path.join(out_dir, "ckpt.pt"), *paths], cwd=args.nanogpt)
    rows.append(("nanoGPT (PyTorch, batch 12, 2,000 steps)", wall, own,
                 float(scored.split()[-2])))
    print(rows[-1], flush=True)
  for variant in args.variants.split(","):
    workdir = os.path.join(tmp, f"ours_{variant or 'default'}")
    config = os.path.join(ROOT, "experiments", "shakespeare_char_transformer.py")
    config += f":{variant}" if variant else ""
    # A cold compilation cache: the first run of the experiment, as nanoGPT's.
    wall, _ = timed([sys.executable, "-m", "deeplearn.train", f"--config={config}",
                     f"--workdir={workdir}", "--config.train.progress=False",
                     f"--config.train.compilation_cache_dir={workdir}_jax_cache"])
    with open(os.path.join(workdir, "summary.json")) as f:
      summary = json.load(f)
    sums = [(m["loss"], n) for split, n in (("validation", len(np.load(paths[0]))),
                                            ("test", len(np.load(paths[1]))))
            for m in [evaluate.evaluate_checkpoint(workdir, split=split)]]
    both = sum(loss * n for loss, n in sums) / sum(n for _, n in sums)
    batch = summary["config"]["data"]["batch_size"]
    rows.append((f"deeplearn :{variant or 'default'} (JAX, batch {batch},"
                 f" {summary['final']['step']:,} steps)", wall, summary["final"]["loss"], both))
    print(rows[-1], flush=True)
  print("\n| run | wall s | own validation loss | loss on the last 10% (same windows) |")
  print("|---|---|---|---|")
  for name, wall, own, both in rows:
    print(f"| {name} | {wall:.1f} | {own:.4f} | {both:.4f} |")


if __name__ == "__main__":
  main()

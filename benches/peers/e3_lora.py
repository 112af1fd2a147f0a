#!/usr/bin/env python3
"""E3c peer: MiniLM sentiment with LoRA (PyTorch side of `examples/minilm_sentiment.rs --mode lora`).

Mirrors shared/bench/mission/e3_minilm_sentiment.py `finetune` (same split, tokens, pooling, head,
AdamW betas (0.9,0.999) eps 1e-8 wd 0.01, HF linear schedule warmup 12 / 125 steps, batch 32,
train mode) with plain-torch LoRA (no peft): rank 8, alpha 16 (scaling 2), dropout 0.1 on the
adapter input, A kaiming-uniform(a=sqrt(5)), B zeros, on every `query` and `value` nn.Linear;
everything else in the encoder frozen, the head trained; peak lr 5e-4. After training the
adapters are merged into the base weights (W += scaling * B @ A) and the test set evaluated.

Usage: python e3_lora.py [--peers DIR] [--max-steps N]
  --peers: the directory of e3_minilm_sentiment.py / common.py (default: shared/bench/mission)
"""
import argparse
import math
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ap = argparse.ArgumentParser()
ap.add_argument("--peers", default="/work/shared/bench/mission")
ap.add_argument("--max-steps", type=int, default=None)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--lr", type=float, default=5e-4)
args = ap.parse_args()
sys.path.insert(0, args.peers)

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402
from transformers import BertModel  # noqa: E402

from common import setup, Timer  # noqa: E402
from e3_minilm_sentiment import MODEL_DIR, load_split, encode, pooled  # noqa: E402


class LoraLinear(nn.Module):
    """y = base(x) + scaling * dropout(x) @ A^T @ B^T, base frozen."""

    def __init__(self, base: nn.Linear, r=8, alpha=16.0, dropout=0.1):
        super().__init__()
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.scaling = alpha / r
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        return self.base(x) + self.scaling * F.linear(F.linear(self.drop(x), self.lora_A), self.lora_B)

    def merged(self):
        with torch.no_grad():
            self.base.weight += self.scaling * (self.lora_B @ self.lora_A)
        return self.base


def main():
    setup(threads=args.threads, seed=0)
    train, test = load_split()
    tok = Tokenizer.from_file(os.path.join(MODEL_DIR, "tokenizer.json"))
    tok.enable_truncation(max_length=64)
    tok.enable_padding(length=64, pad_id=0, pad_token="[PAD]")
    xtr, mtr, ytr = encode(tok, train)
    xte, mte, yte = encode(tok, test)
    bert = BertModel.from_pretrained(MODEL_DIR)
    torch.manual_seed(0)
    head = nn.Linear(384, 3)
    for p in bert.parameters():
        p.requires_grad_(False)
    for layer in bert.encoder.layer:
        att = layer.attention.self
        att.query = LoraLinear(att.query)
        att.value = LoraLinear(att.value)
    params = [p for p in bert.parameters() if p.requires_grad] + list(head.parameters())
    print("trainable params:", sum(p.numel() for p in params), flush=True)
    g = torch.Generator().manual_seed(0)
    bs = 32
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    total = (len(xtr) + bs - 1) // bs
    warm = int(0.1 * total)
    lam = lambda s: s / max(1, warm) if s < warm else max(0.0, (total - s) / max(1, total - warm))  # noqa: E731
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lam)
    steps = total if args.max_steps is None else min(args.max_steps, total)
    bert.train()
    losses = []
    with Timer() as tt:
        perm = torch.randperm(len(xtr), generator=g)
        for step, i in enumerate(range(0, len(xtr), bs)):
            if step >= steps:
                break
            idx = perm[i:i + bs]
            loss = F.cross_entropy(head(pooled(bert, xtr[idx], mtr[idx])), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            if step % 25 == 0 or step + 1 == steps:
                print(step, loss.item(), flush=True)
    for layer in bert.encoder.layer:
        att = layer.attention.self
        att.query = att.query.merged()
        att.value = att.value.merged()
    assert all("lora" not in k for k in bert.state_dict())
    bert.eval()
    with torch.no_grad(), Timer() as te:
        logits = torch.cat([head(pooled(bert, xte[i:i + 64], mte[i:i + 64])) for i in range(0, len(xte), 64)])
    acc = (logits.argmax(1) == yte).float().mean().item()
    print({"task": "E3c MiniLM sentiment lora", "impl": "torch", "steps": steps, "lr": args.lr,
           "train_seconds": round(tt.s, 3), "eval_seconds_test": round(te.s, 3), "test_acc": acc,
           "first_loss": losses[0], "last10_loss_mean": float(np.mean(losses[-10:]))}, flush=True)


if __name__ == "__main__":
    main()

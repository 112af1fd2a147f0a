#!/usr/bin/env python3
"""PyTorch's side of kiln's single-layer benches (benches/layers.rs, examples/bench_layers.rs):
conv2d 3x3 64->64 on [8,64,56,56] (forward, forward + backward), layer_norm over 384 features
of [1024,384] (forward + backward) and cross-entropy over [128,10] and [256,1000] logits
(forward + backward). Same timing protocol and JSON lines as shared/bench/torch_bench.py, whose
`bench` and `emit` it imports (pass its folder with --peers).

  python3 benches/torch_layers.py --peers ../shared/bench --threads 2
"""
import argparse, os, sys

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--peers", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "bench"))
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    sys.path.insert(0, a.peers)
    import torch
    import torch.nn.functional as F
    from torch_bench import bench, emit
    torch.set_num_threads(a.threads)
    torch.set_num_interop_threads(1)
    t = a.threads
    g = torch.Generator().manual_seed(0)
    rand = lambda *s: torch.rand(*s, generator=g) * 2 - 1

    x = rand(8, 64, 56, 56).requires_grad_(True)
    w = rand(64, 64, 3, 3).requires_grad_(True)
    def conv_fwd():
        with torch.no_grad():
            F.conv2d(x, w, padding=1)
    def conv_fwd_bwd():
        F.conv2d(x, w, padding=1).mean().backward()
        x.grad = None; w.grad = None
    st = bench(conv_fwd); emit("conv2d_3x3_64 fwd", t, "ms", st["median_s"] * 1e3, st)
    st = bench(conv_fwd_bwd); emit("conv2d_3x3_64 fwd+bwd", t, "ms", st["median_s"] * 1e3, st)

    x = rand(1024, 384).requires_grad_(True)
    lw, lb = torch.ones(384, requires_grad=True), torch.zeros(384, requires_grad=True)
    def ln():
        F.layer_norm(x, (384,), lw, lb, 1e-5).mean().backward()
        x.grad = None; lw.grad = None; lb.grad = None
    st = bench(ln); emit("layer_norm 1024x384 fwd+bwd", t, "ms", st["median_s"] * 1e3, st)

    for n, c in [(128, 10), (256, 1000)]:
        logits = rand(n, c).requires_grad_(True)
        target = torch.arange(n) % c
        def ce():
            F.cross_entropy(logits, target).backward()
            logits.grad = None
        st = bench(ce); emit(f"cross_entropy {n}x{c} fwd+bwd", t, "ms", st["median_s"] * 1e3, st)

if __name__ == "__main__":
    main()

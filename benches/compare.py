#!/usr/bin/env python3
"""Side-by-side run of kiln's benchmarks and PyTorch's, in one session.

  cargo build --release --example bench_micro --example bench_train --example bench_layers --example bench_encoder --example bench_io
  python3 benches/compare.py --peers ../shared/bench --python venv/bin/python --rounds 3 [--suite micro|train|layers|encoder|io|all]

micro: PyTorch's torch_micro.py and W0 of torch_bench.py against kiln's examples/bench_micro.
train: W2, W3 and W5 of torch_bench.py against kiln's examples/bench_train.
layers: benches/torch_layers.py (conv2d, layer_norm, cross-entropy alone) against
kiln's examples/bench_layers.
encoder: W4a, W4b and W4c of torch_bench.py (MiniLM-shaped BERT encoder) against kiln's
examples/bench_encoder.
io: W6 of torch_bench.py (load the MiniLM safetensors file: mmap, mmap + sum of every tensor,
eager copy) against kiln's examples/bench_io; rows are keyed by workload and variant2.
Each round runs every thread count of both sides; the table shows the medians over rounds and
kiln's figure over PyTorch's.
"""
import argparse, json, os, statistics, subprocess, sys

FMA_PEAK = {1: 117.0, 2: 233.0}  # GFLOP/s of this machine (shared/bench/README.md)

def run(cmd, threads):
    env = dict(os.environ)
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
        env[k] = str(threads)
    out = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=True).stdout
    return [json.loads(l) for l in out.splitlines() if l.startswith("{")]

def key(rec):
    w = rec["workload"]
    w = {"W1": "matmul"}.get(w, w)
    if "n" in rec:
        w = f"{w} n={rec['n']}"
    if "variant2" in rec:
        w = f"{w} {rec['variant2']}"
    return w, rec["threads"]

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--peers", default="../shared/bench")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--kiln-dir", default="target/release/examples")
    ap.add_argument("--suite", default="all", choices=["micro", "train", "layers", "encoder", "io", "all"])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    vals = {}  # (impl, workload, threads) -> [values]
    metric = {}
    for _ in range(a.rounds):
        for t in [int(x) for x in a.threads.split(",")]:
            recs = []
            if a.suite in ("micro", "all"):
                recs += run([a.python, os.path.join(a.peers, "torch_micro.py"), "--threads", str(t)], t)
                recs += run([a.python, os.path.join(a.peers, "torch_bench.py"), "--workloads", "w0", "--threads", str(t)], t)
                recs += run([os.path.join(a.kiln_dir, "bench_micro"), "--threads", str(t)], t)
            if a.suite in ("train", "all"):
                recs += run([a.python, os.path.join(a.peers, "torch_bench.py"), "--workloads", "w2,w3,w5", "--threads", str(t)], t)
                for w in ("w2", "w3", "w5"):  # one process each, so peak RSS is the workload's own
                    recs += run([os.path.join(a.kiln_dir, "bench_train"), "--threads", str(t), "--only", w], t)
            if a.suite in ("layers", "all"):
                here = os.path.dirname(os.path.abspath(__file__))
                recs += run([a.python, os.path.join(here, "torch_layers.py"), "--peers", a.peers, "--threads", str(t)], t)
                recs += run([os.path.join(a.kiln_dir, "bench_layers"), "--threads", str(t)], t)
            if a.suite in ("encoder", "all"):
                recs += run([a.python, os.path.join(a.peers, "torch_bench.py"), "--workloads", "w4a,w4b,w4c", "--threads", str(t)], t)
                for w in ("w4a", "w4b", "w4c"):  # one process each, so W4b's peak RSS is its own
                    recs += run([os.path.join(a.kiln_dir, "bench_encoder"), "--threads", str(t), "--only", w], t)
            if a.suite in ("io", "all"):
                recs += run([a.python, os.path.join(a.peers, "torch_bench.py"), "--workloads", "w6", "--threads", str(t)], t)
                recs += run([os.path.join(a.kiln_dir, "bench_io"), "--threads", str(t)], t)
            for r in recs:
                if "value" not in r:
                    continue
                w, th = key(r)
                vals.setdefault((r["impl"], w, th), []).append(r["value"])
                if "peak_rss_mib" in r:
                    vals.setdefault((r["impl"], w + " peak RSS", th), []).append(r["peak_rss_mib"])
                    metric[w + " peak RSS"] = "MiB"
                metric[w] = r["metric"]
    rows = sorted({(w, t) for (_, w, t) in vals}, key=lambda x: (x[1], x[0]))
    print("| workload | threads | metric | PyTorch | kiln | kiln / PyTorch | kiln share of FMA peak |")
    # The ratio is kiln's figure over PyTorch's: above 1 is better for GFLOP/s and GB/s,
    # below 1 is better for times (us, us/op).
    print("|---|---|---|---|---|---|---|")
    for w, t in rows:
        p, k = vals.get(("pytorch", w, t)), vals.get(("kiln", w, t))
        if not p or not k:
            continue
        p, k = statistics.median(p), statistics.median(k)
        m = metric[w]
        peak = f"{100 * k / FMA_PEAK[t]:.0f}%" if m == "GFLOP/s" else ""
        # Below 1 is better for times and memory (us, ms/step, MiB).
        print(f"| {w} | {t} | {m} | {p:.3f} | {k:.3f} | {k / p:.2f} | {peak} |")

if __name__ == "__main__":
    main()

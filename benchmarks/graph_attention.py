"""Dense against sparse graph attention: time and memory against the number of nodes, in one run.

    python benchmarks/graph_attention.py                          # 1k, 2k, 5k and 10k nodes
    python benchmarks/graph_attention.py --nodes 500 1000 --repeats 1

For each size a Barabási–Albert graph (3 edges per new node: a power-law graph like a social
network's) is built and, for each attention, a fresh process builds the layout and a network of
the `small` preset (width 128, 4 blocks), then times one forward pass over a window of `--frames`
frames without gradients (what one rollout step costs) and, with `--train-nodes`, one forward
and backward pass on a subgraph of that many nodes of the whole graph (what a training step
costs; 8 windows). Each row gives the layout's build time, the median pass times and the
process's peak resident memory; the last columns are sparse ÷ dense for the same size. A dense
layout beyond `layouts.MAX_TOKENS` nodes is refused by the library, and the row says so. A
dense training step is timed only up to `layouts.DENSE_NODES` nodes: beyond, each step
recomputes the whole [layers, heads, N, N] kernel with its gradient (minutes at 5,000 nodes),
which is why larger graphs get sparse attention.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, median_seconds  # noqa: E402


def one(nodes: int, attention: str, frames: int, train_nodes: int, repeats: int) -> dict[str, float | str]:
    """Measure one (size, attention) cell in this process."""
    import networkx as nx
    import scipy.sparse as sp
    import torch

    from diffworld.layouts import DENSE_NODES, MAX_TOKENS
    from diffworld.layouts.graph import GraphLayout
    from diffworld.model.dit import PRESETS, DiT
    from diffworld.train import draw_subgraph

    if attention == "dense" and nodes > MAX_TOKENS:
        return {"note": f"refused: dense attention holds at most {MAX_TOKENS} nodes"}
    edges = list(nx.barabasi_albert_graph(nodes, 3, seed=0).edges())
    t0 = time.perf_counter()
    layout = GraphLayout((nodes, 3), edges, attention=attention)
    net = DiT(PRESETS["small"], layout).eval()
    build = time.perf_counter() - t0
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, frames, nodes, 3, generator=g)
    c, times = torch.zeros(1, frames), torch.arange(frames)
    with torch.no_grad():
        forward = median_seconds(lambda: net(x, c, None, times), repeats)
    row: dict[str, float | str] = {"build_s": build, "forward_s": forward}
    if train_nodes and (attention == "sparse" or nodes <= DENSE_NODES):
        net.train()
        sub = draw_subgraph(sp.csr_array(layout.adjacency), train_nodes, g, torch.device("cpu"))
        xs = torch.randn(8, frames, len(sub.nodes), 3, generator=g)

        def step() -> None:
            net.zero_grad(set_to_none=True)
            net(xs, torch.zeros(8, frames), None, times, nodes=sub.nodes).square().mean().backward()

        row["train_s"] = median_seconds(step, repeats)
    row["peak_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, nargs="+", default=[1000, 2000, 5000, 10000])
    parser.add_argument("--frames", type=int, default=4, help="Frames in the timed window.")
    parser.add_argument("--train-nodes", type=int, default=300, help="Subgraph of a training step (0: none).")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", nargs=2, metavar=("NODES", "ATTENTION"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        row = one(int(args.one[0]), args.one[1], args.frames, args.train_nodes, args.repeats)
        print(json.dumps(row))
        return

    print(machine())
    print(
        f"small preset, a window of {args.frames} frames; training step: 8 windows on a subgraph of {args.train_nodes}"
    )
    header = f"{'nodes':>6} {'attention':>9} {'build s':>8} {'forward s':>9} {'train s':>8} {'peak GiB':>8}"
    print(header + f" {'forward ×':>9} {'memory ×':>8}")
    for n in args.nodes:
        rows = {}
        for attention in ("dense", "sparse"):
            cmd = [sys.executable, __file__, "--one", str(n), attention, "--frames", str(args.frames)]
            cmd += ["--train-nodes", str(args.train_nodes), "--repeats", str(args.repeats)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode:
                last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                rows[attention] = {"note": f"failed: {last}"}
            else:
                rows[attention] = json.loads(proc.stdout.strip().splitlines()[-1])
        for attention, row in rows.items():
            if "note" in row:
                print(f"{n:>6} {attention:>9} {row['note']}")
                continue
            train = f"{row['train_s']:8.3f}" if "train_s" in row else f"{'-':>8}"
            line = f"{n:>6} {attention:>9} {row['build_s']:8.2f} {row['forward_s']:9.3f} {train} {row['peak_gib']:8.2f}"
            dense = rows["dense"]
            if attention == "sparse" and "note" not in dense:
                line += f" {row['forward_s'] / dense['forward_s']:8.2f}x {row['peak_gib'] / dense['peak_gib']:7.2f}x"
            print(line)


if __name__ == "__main__":
    main()

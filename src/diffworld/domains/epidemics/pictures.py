"""Pictures of an epidemic evaluation: the spread on the graph, the epidemic curves, the hubs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from diffworld.evaluate.pictures import COLORS
from diffworld.worlds.cascade import S

#: Node colours of the true S/I/R states.
SIR_COLORS = ("#4c72b0", "#d62728", "#9a9a9a")
#: Nodes named on the spread's truth panel: the best-linked ones.
LABELLED_HUBS = 5
#: The most nodes drawn; a larger graph is drawn where the case's spread is (`spread_nodes`).
GIF_NODES = 400


def _figure_image(fig: Any) -> Image.Image:
    fig.canvas.draw()
    return Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())


def graph_heatmap_gif(
    graph: Any,
    truth: np.ndarray,
    forecasts: dict[str, Any],
    path: str | Path,
    case: int = 0,
    fps: int = 2,
    labels: Sequence[Any] | None = None,
) -> Path:
    """Animation over the forecast horizon of one case: the true S/I/R states beside each
    forecaster's probability that a node is infected, on a fixed drawing of the graph.

    `truth` [H, N] state codes of the case; `forecasts` maps names to objects with `.infected`
    [S, H, N] (diffworld.domains.epidemics.scores.CascadeForecast). With `labels` (each node's
    name), the truth panel names the `LABELLED_HUBS` best-linked nodes. A graph of more than
    `GIF_NODES` nodes is drawn on the nodes of `spread_nodes` only.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import networkx as nx

    infected = {name: np.asarray(fc.infected)[case] for name, fc in forecasts.items()}  # [H, N] each
    if graph.number_of_nodes() > GIF_NODES:
        kept = spread_nodes(truth, list(infected.values()), GIF_NODES)
        graph = nx.convert_node_labels_to_integers(graph.subgraph(kept.tolist()), ordering="sorted")
        truth = np.asarray(truth)[:, kept]
        infected = {name: p[:, kept] for name, p in infected.items()}
        labels = None if labels is None else [labels[v] for v in kept]
    pos = nx.spring_layout(graph, seed=0)
    hubs = sorted(graph.nodes, key=lambda v: -graph.degree(v))[:LABELLED_HUBS] if labels is not None else []
    named = {v: str(labels[v]) for v in hubs} if labels is not None else {}
    names = list(forecasts)
    frames = []
    for h in range(truth.shape[0]):
        fig, axes = plt.subplots(1, len(names) + 1, figsize=(3.2 * (len(names) + 1), 3.4))
        nx.draw_networkx_edges(graph, pos, ax=axes[0], alpha=0.2)
        nx.draw_networkx_nodes(graph, pos, ax=axes[0], node_size=40, node_color=[SIR_COLORS[s] for s in truth[h]])
        if named:
            nx.draw_networkx_labels(graph, pos, labels=named, ax=axes[0], font_size=6)
        axes[0].set_title(f"truth, step {h + 1}\n(blue S, red I, grey R)", fontsize=9)
        for ax, name in zip(axes[1:], names):
            nx.draw_networkx_edges(graph, pos, ax=ax, alpha=0.2)
            p = infected[name][h]
            nx.draw_networkx_nodes(graph, pos, ax=ax, node_size=40, node_color=p, cmap="inferno_r", vmin=0, vmax=1)
            ax.set_title(f"{name}: P(infected)", fontsize=9)
        for ax in axes:
            ax.set_axis_off()
        fig.tight_layout()
        frames.append(_figure_image(fig))
        plt.close(fig)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
    return Path(path)


def spread_nodes(truth: np.ndarray, infected: list[np.ndarray], most: int) -> np.ndarray:
    """Sorted indices of at most `most` nodes where a case's spread is: every node the truth [H, N]
    shows reached, then the nodes of largest forecast P(infected) ([H, N] each) at any step."""
    truth = np.asarray(truth)
    score = np.max([np.asarray(p).max(0) for p in infected], axis=0) if infected else np.zeros(truth.shape[1])
    score = np.where((truth != S).any(0), np.inf, score)
    ranked = np.argsort(-score, kind="stable")[:most]
    return np.sort(ranked[score[ranked] > 0]) if (score > 0).any() else np.sort(ranked)


def plot_cascade_curves(traj: dict[str, np.ndarray], truth: np.ndarray, path: str | Path, case: int = 0) -> Path:
    """Infected and recovered fractions of one case against the step: each ensemble's median with
    5–95% and 25–75% bands, and the truth. `traj` maps names to [S, M, H, N] state codes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    steps = np.arange(1, truth.shape[1] + 1)
    for ax, state, label in ((axes[0], 1, "infected"), (axes[1], 2, "recovered")):
        for name, t in traj.items():
            frac = (np.asarray(t)[case] == state).mean(-1)  # [M, H]
            color = COLORS.get(name)
            if frac.shape[0] > 1:
                lo, q1, med, q3, hi = np.quantile(frac, [0.05, 0.25, 0.5, 0.75, 0.95], axis=0)
                ax.fill_between(steps, lo, hi, color=color, alpha=0.15)
                ax.fill_between(steps, q1, q3, color=color, alpha=0.3)
            else:
                med = frac[0]
            ax.plot(steps, med, color=color, label=name)
        ax.plot(steps, (truth[case] == state).mean(-1), "k--", label="truth")
        ax.set_xlabel("step")
        ax.set_ylabel(f"{label} fraction")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle("held-out epidemic: median, 25–75% and 5–95% bands")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_hubs(expected_reach: dict[str, Any], kendall_tau: dict[str, float], path: str | Path) -> Path:
    """Each node's expected final reach as the seed: the model's against the Monte-Carlo truth,
    and every ranking's Kendall τ against the truth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    truth = np.asarray(expected_reach["truth"])
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    if "model" in expected_reach:
        model = np.asarray(expected_reach["model"], dtype=np.float64)  # None (a seed not dreamed from): NaN
        axes[0].scatter(truth, model, s=12, color=COLORS["model"])
        top = max(truth.max(), np.nanmax(model))
        axes[0].plot([0, top], [0, top], "k:", lw=1)
    axes[0].set_xlabel("expected reach, Monte-Carlo truth")
    axes[0].set_ylabel("expected reach, model's dreams")
    axes[0].grid(alpha=0.3)
    names = list(kendall_tau)
    axes[1].bar(names, [kendall_tau[n] for n in names], color=[COLORS.get(n, "#8c564b") for n in names])
    axes[1].set_ylabel("Kendall τ vs the truth's ranking")
    axes[1].set_ylim(min(0.0, min(kendall_tau.values(), default=0.0)), 1)
    axes[1].grid(alpha=0.3, axis="y")
    fig.suptitle("hubs: who spreads furthest as patient zero")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)

"""Pictures of an evaluation: CRPS against horizon (PNG) and true-vs-dreamed animations (GIF)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

COLORS = {
    "model": "#d62728", "persistence": "#7f7f7f", "climatology": "#2ca02c", "oracle": "#1f77b4",
    "mean_field": "#9467bd", "ar1": "#ff7f0e",
}  # fmt: skip


def plot_horizons(metrics: dict[str, Any], path: str | Path) -> Path:
    """CRPS of the decoded state (and of pixels) against horizon for the model and every baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = metrics["horizons"]
    panels = [("state_crps", "state CRPS (pixels of position error)"), ("pixel_crps", "pixel CRPS")]
    panels = [p for p in panels if p[0] in metrics["metrics"]["model"]]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels):
        for name, entry in metrics["metrics"].items():
            ax.plot(h, entry[key], marker="o", ms=3, label=name, color=COLORS.get(name))
        ax.set_xlabel("horizon (frames)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0][0].legend()
    fig.suptitle(f"{metrics['world']}: held-out forecasts ({metrics['held_out']['cases']} cases)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


#: Colours of the channels of a multi-channel binary grid (MinAtar's objects), drawn over black.
PALETTE = np.array(
    [[230, 80, 60], [80, 180, 250], [250, 210, 70], [120, 220, 120], [200, 120, 250],
     [250, 150, 200], [90, 230, 220], [240, 240, 240], [250, 140, 40], [150, 150, 255]],
    dtype=np.float32,
) / 255  # fmt: skip


def to_image(frame: np.ndarray, scale: int, value_range: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """A grid frame (C, H, W) -> uint8 RGB (H·scale, W·scale, 3).

    Values are mapped from `value_range` to [0, 1]; one channel is grey, three are RGB, any
    other number is a colour composite (channel c in PALETTE[c], the brightest wins).
    """
    lo, hi = value_range
    f = np.clip((np.asarray(frame, dtype=np.float32) - lo) / (hi - lo), 0.0, 1.0)
    if f.shape[0] == 3:
        rgb = f
    elif f.shape[0] == 1:
        rgb = np.repeat(f, 3, axis=0)
    else:
        colours = PALETTE[np.arange(f.shape[0]) % len(PALETTE)]  # [C, 3]
        rgb = (f[:, None] * colours[:, :, None, None]).max(axis=0)  # [3, H, W]
    img = (rgb.transpose(1, 2, 0) * 255).astype(np.uint8)
    return img.repeat(scale, axis=0).repeat(scale, axis=1)


def write_gif(
    panels: list[tuple[str, np.ndarray]],
    path: str | Path,
    scale: int = 4,
    fps: int = 8,
    captions: list[str] | None = None,
    value_range: tuple[float, float] = (0.0, 1.0),
) -> Path:
    """Side-by-side animation: each panel is (title, frames [T, C, H, W]); all panels share T."""
    t = panels[0][1].shape[0]
    if any(p[1].shape[0] != t for p in panels):
        raise ValueError("every panel of a GIF needs the same number of frames")
    h, w = (np.asarray(panels[0][1].shape[-2:]) * scale).tolist()
    gap, top, bottom = 4, 14, 14 if captions else 0
    width = len(panels) * w + (len(panels) + 1) * gap
    images = []
    for i in range(t):
        canvas = Image.new("RGB", (width, h + top + bottom + gap), (40, 40, 40))
        draw = ImageDraw.Draw(canvas)
        for j, (title, frames) in enumerate(panels):
            x = gap + j * (w + gap)
            canvas.paste(Image.fromarray(to_image(frames[i], scale, value_range)), (x, top))
            draw.text((x, 1), title, fill=(230, 230, 230))
        if captions:
            draw.text((gap, top + h + 2), captions[i], fill=(255, 200, 80))
        images.append(canvas)
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return Path(path)


# --- graphs -------------------------------------------------------------------------------------

#: Node colours of the true S/I/R states.
SIR_COLORS = ("#4c72b0", "#d62728", "#9a9a9a")


def _figure_image(fig: Any) -> Image.Image:
    fig.canvas.draw()
    return Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())


def graph_heatmap_gif(graph: Any, truth: np.ndarray, forecasts: dict[str, Any], path: str | Path, case: int = 0, fps: int = 2) -> Path:
    """Animation over the forecast horizon of one case: the true S/I/R states beside each
    forecaster's probability that a node is infected, on a fixed drawing of the graph.

    `truth` [H, N] state codes of the case; `forecasts` maps names to objects with `.infected`
    [S, H, N] (diffworld.evaluate.cascade.CascadeForecast).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import networkx as nx

    pos = nx.spring_layout(graph, seed=0)
    names = list(forecasts)
    frames = []
    for h in range(truth.shape[0]):
        fig, axes = plt.subplots(1, len(names) + 1, figsize=(3.2 * (len(names) + 1), 3.4))
        nx.draw_networkx_edges(graph, pos, ax=axes[0], alpha=0.2)
        nx.draw_networkx_nodes(graph, pos, ax=axes[0], node_size=40, node_color=[SIR_COLORS[s] for s in truth[h]])
        axes[0].set_title(f"truth, step {h + 1}\n(blue S, red I, grey R)", fontsize=9)
        for ax, name in zip(axes[1:], names):
            nx.draw_networkx_edges(graph, pos, ax=ax, alpha=0.2)
            p = np.asarray(forecasts[name].infected)[case, h]
            nx.draw_networkx_nodes(graph, pos, ax=ax, node_size=40, node_color=p, cmap="inferno_r", vmin=0, vmax=1)
            ax.set_title(f"{name}: P(infected)", fontsize=9)
        for ax in axes:
            ax.set_axis_off()
        fig.tight_layout()
        frames.append(_figure_image(fig))
        plt.close(fig)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
    return Path(path)


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
        axes[0].scatter(truth, expected_reach["model"], s=12, color=COLORS["model"])
        top = max(truth.max(), np.max(expected_reach["model"]))
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


def plot_lead_scores(report: dict[str, Any], path: str | Path) -> Path:
    """CRPS, ensemble-mean RMSE and spread/skill against lead time for every forecaster."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lead = report["lead_time"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    for name, s in report["scores"].items():
        for ax, key in zip(axes, ("crps", "rmse", "spread_skill")):
            if s[key] is not None:
                ax.plot(lead, s[key], label=name, color=COLORS.get(name), lw=2.5 if name == "model" else 1.2)
    for ax, label in zip(axes, ("fair CRPS", "ensemble-mean RMSE", "spread / skill (1 = calibrated)")):
        ax.set_xlabel("lead time")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[2].axhline(1.0, color="k", lw=0.8, ls=":")
    axes[0].legend()
    fig.suptitle(f"held-out forecasts: {report['cases']['cases']} start dates, {report['cases']['members']} members")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_ring_forecast(truth: np.ndarray, ensemble: np.ndarray, path: str | Path, free: tuple[np.ndarray, np.ndarray] | None = None) -> Path:
    """Hovmöller diagrams (variable against lead) of one forecast of a ring of variables: truth,
    ensemble mean, one member, ensemble spread; with `free` = (true run, free run) [L, K, ...]
    a second row shows a long free-running rollout beside a true trajectory.

    truth [H, K, 1] and ensemble [M, H, K, 1] of one start date.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    truth, ensemble = np.asarray(truth)[..., 0], np.asarray(ensemble)[..., 0]
    lo, hi = np.percentile(truth, [1, 99])
    rows = 2 if free is not None else 1
    fig, axes = plt.subplots(rows, 4, figsize=(15, 3.6 * rows), squeeze=False, layout="constrained")
    panels = [("truth", truth), ("ensemble mean", ensemble.mean(0)), ("member 1", ensemble[0])]
    for ax, (title, x) in zip(axes[0], panels):
        im = ax.imshow(x.T, aspect="auto", origin="lower", cmap="RdBu_r", vmin=lo, vmax=hi)
        ax.set_title(title)
    axes[0][3].imshow(ensemble.std(0).T, aspect="auto", origin="lower", cmap="viridis")
    axes[0][3].set_title("ensemble spread")
    fig.colorbar(im, ax=axes[0][:3].tolist(), shrink=0.8)
    if free is not None:
        for ax, (title, x) in zip(axes[1], (("true run", free[0]), ("free-running model", free[1]))):
            ax.imshow(np.asarray(x)[..., 0].T, aspect="auto", origin="lower", cmap="RdBu_r", vmin=lo, vmax=hi)
            ax.set_title(title)
        for ax in axes[1][2:]:
            ax.set_axis_off()
    for ax in axes.ravel():
        ax.set_xlabel("step")
        ax.set_ylabel("variable")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def colormap_frames(x: np.ndarray, lo: float, hi: float, cmap: str = "magma") -> np.ndarray:
    """[T, H, W] values -> [T, 3, H, W] RGB in [0, 1] through a matplotlib colour map."""
    import matplotlib

    rgb = matplotlib.colormaps[cmap](np.clip((np.asarray(x) - lo) / max(hi - lo, 1e-12), 0, 1))[..., :3]
    return rgb.transpose(0, 3, 1, 2)


def field_forecast_gif(truth: np.ndarray, ensemble: np.ndarray, path: str | Path, channel: int = 0, names: tuple[str, ...] = ()) -> Path:
    """Side-by-side animation over the leads of one forecast: truth, ensemble mean, one member and the
    ensemble's spread, of one channel. truth [H, C, h, w], ensemble [M, H, C, h, w]."""
    truth, ensemble = np.asarray(truth)[:, channel], np.asarray(ensemble)[:, :, channel]
    lo, hi = np.percentile(truth, [1, 99])
    spread = ensemble.std(axis=0)
    label = names[channel] if channel < len(names) else f"channel {channel}"
    panels = [
        (f"truth ({label})", colormap_frames(truth, lo, hi)),
        ("ensemble mean", colormap_frames(ensemble.mean(axis=0), lo, hi)),
        ("member 1", colormap_frames(ensemble[0], lo, hi)),
        ("spread", colormap_frames(spread, 0.0, max(float(spread.max()), 1e-6), "viridis")),
    ]
    captions = [f"lead {h + 1}" for h in range(truth.shape[0])]
    return write_gif(panels, path, scale=max(1, 128 // truth.shape[-1]), fps=4, captions=captions)


def plot_spectra(report: dict[str, Any], path: str | Path) -> Path:
    """Power spectra: the free run's against the true runs' (left) and the forecast/truth ratio by lead (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    free = report["free_run"]["spectrum"]
    k = np.arange(1, len(free["truth"]) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    axes[0].loglog(k, free["truth"], "k--", label="true runs")
    axes[0].loglog(k, free["model"], color=COLORS["model"], label="free-running model")
    axes[0].set_xlabel("wavenumber")
    axes[0].set_ylabel("power")
    axes[0].legend()
    ratio = np.asarray(report["forecast_spectrum_ratio_by_lead"])  # [H, K]
    h = ratio.shape[0]
    for lead in sorted({1, max(1, h // 4), max(1, h // 2), h}):
        axes[1].semilogx(k, ratio[lead - 1], label=f"lead {lead}")
    for y in (0.5, 1.0, 2.0):
        axes[1].axhline(y, color="k", lw=0.8, ls=":" if y != 1.0 else "-")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("wavenumber")
    axes[1].set_ylabel("forecast / truth power")
    axes[1].legend()
    for ax in axes:
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_fan_chart(dates: Any, returns: np.ndarray, paths: np.ndarray, path: str | Path) -> Path:
    """Fan chart: cumulative return of scenario paths [n, H] after the history, against what happened.

    `dates` and `returns` cover the history and then the H scenario days (the real outcome).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = paths.shape[1]
    past = len(returns) - h
    level = np.cumsum(returns)  # cumulative 100·log-return
    start = level[past - 1]
    cum = start + np.concatenate([np.zeros((len(paths), 1)), np.cumsum(paths, axis=1)], axis=1)  # [n, 1 + H], from the last known day
    fig, ax = plt.subplots(figsize=(8, 3.8))
    ax.plot(dates[:past], level[:past], color="k", lw=1.2, label="history")
    ax.plot(dates[past - 1 :], level[past - 1 :], color="k", lw=1.2, ls="--", label="what happened")
    x = dates[past - 1 :]
    for lo, hi, alpha in ((1, 99, 0.15), (5, 95, 0.25), (25, 75, 0.4)):
        ax.fill_between(x, np.percentile(cum, lo, axis=0), np.percentile(cum, hi, axis=0), color=COLORS["model"], alpha=alpha, lw=0,
                        label=f"scenarios {lo}–{hi}%")  # fmt: skip
    ax.plot(x, np.median(cum, axis=0), color=COLORS["model"], lw=1.5, label="median")
    ax.set_ylabel("cumulative 100·log-return")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(f"{len(paths)} dreamed {h}-day paths from {np.datetime_as_string(np.datetime64(dates[past - 1]), unit='D')}")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_var_backtest(dates: Any, returns: np.ndarray, var: dict[str, np.ndarray], path: str | Path, level: str = "1%") -> Path:
    """Daily returns of the test period with each forecaster's VaR line, the hits (returns below it) marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(dates, returns, color="#555555", lw=0.6, label="return")
    colors = [COLORS["model"], "#1f77b4", "#ff7f0e"]
    for (name, q), color in zip(var.items(), colors):
        hits = returns < q
        ax.plot(dates, q, color=color, lw=1.0, label=f"{name} VaR {level} ({int(hits.sum())} hits)")
        ax.scatter(np.asarray(dates)[hits], returns[hits], color=color, s=18, zorder=3)
    ax.set_ylabel("100·log-return")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)

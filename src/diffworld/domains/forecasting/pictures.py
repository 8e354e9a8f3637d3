"""Pictures of a forecast evaluation: scores by lead, spectra, and one forecast drawn (a ring's
Hovmöller diagrams or a grid's animation)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from diffworld.evaluate.pictures import COLORS, write_gif


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


def plot_ring_forecast(
    truth: np.ndarray, ensemble: np.ndarray, path: str | Path, free: tuple[np.ndarray, np.ndarray] | None = None
) -> Path:
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


def field_forecast_gif(
    truth: np.ndarray, ensemble: np.ndarray, path: str | Path, channel: int = 0, names: tuple[str, ...] = ()
) -> Path:
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

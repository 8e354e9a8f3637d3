"""Pictures of a market backtest: a fan chart of scenarios and the VaR against the returns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from diffworld.evaluate.pictures import COLORS


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
    cum = start + np.concatenate(
        [np.zeros((len(paths), 1)), np.cumsum(paths, axis=1)], axis=1
    )  # [n, 1 + H], from the last known day
    fig, ax = plt.subplots(figsize=(8, 3.8))
    ax.plot(dates[:past], level[:past], color="k", lw=1.2, label="history")
    ax.plot(dates[past - 1 :], level[past - 1 :], color="k", lw=1.2, ls="--", label="what happened")
    x = dates[past - 1 :]
    for lo, hi, alpha in ((1, 99, 0.15), (5, 95, 0.25), (25, 75, 0.4)):
        ax.fill_between(x, np.percentile(cum, lo, axis=0), np.percentile(cum, hi, axis=0), color=COLORS["model"],
                        alpha=alpha, lw=0, label=f"scenarios {lo}–{hi}%")  # fmt: skip
    ax.plot(x, np.median(cum, axis=0), color=COLORS["model"], lw=1.5, label="median")
    ax.set_ylabel("cumulative 100·log-return")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title(
        f"{len(paths)} dreamed {h}-day paths from {np.datetime_as_string(np.datetime64(dates[past - 1]), unit='D')}"
    )
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_var_backtest(
    dates: Any, returns: np.ndarray, var: dict[str, np.ndarray], path: str | Path, level: str = "1%"
) -> Path:
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

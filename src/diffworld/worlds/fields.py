"""Fields: a stochastic advection–diffusion world on a periodic grid, a climate-like test bed.

Each channel c (default: temperature and moisture) is a field φ_c on an n × n periodic grid with

    ∂φ_c/∂t = −u(t)·∇φ_c + κ_c ∇²φ_c − μ_c φ_c + Σ_sources a_{s,c}(t) g_s(x) + η ξ_c(x, t)

- Fick's law spreads it (diffusivity κ_c, cells² per step);
- a uniform wind u(t) carries it; the wind is one of `regimes` directions at speed `wind`
  (cells per step) and jumps to another at random (probability `switch` per step);
- it relaxes to zero at rate μ_c (a loss to the outside, so the climate is stationary);
- sources appear at random (Poisson, `source_rate` per step) at a random cell, each a Gaussian
  blob g_s of width `source_width` cells, fixed on the ground; a source emits into every
  channel with its own amplitude (the first channel's uniform in 0.5–1.5 × `source_amplitude`),
  which decays exponentially (lifetime `source_life` steps);
- white noise ξ of intensity η = `noise` (per cell and step) stands for unresolved small-scale
  processes. It gives the fields power at every scale: in equilibrium the power at wavenumber k
  is about η² / (1 − exp(−2(κk² + μ))), a k⁻² tail instead of the near-zero small-scale power of
  a purely diffusing field — so a forecast's spectrum can be compared with the truth's at every
  wavenumber, and blur (or a sampler's leftover noise) shows where it sits.

Numerics: over one step the wind and diffusivity are constant, so transport is solved exactly in
Fourier space — every mode is multiplied by exp((−κ|k|² − i k·u − μ)·dt) — which is stable for
any step and conserves each channel's total exactly when μ = 0 (the k = 0 mode is untouched by
advection and diffusion). Sources are then added for the step (an operator split, first order
in dt). Branching (get_state/set_state/reseed) makes the true simulator an oracle ensemble: from
one state its futures differ only by which sources appear and when the wind turns.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from diffworld.spec import ActionSpace, WorldSpec
from diffworld.worlds.base import check_no_action, generator_state, restore_generator

MAX_STEPS = 200
CHANNELS = ("temperature", "moisture")


class Fields:
    """The stochastic advection–diffusion world; frames are (C, n, n) float32."""

    def __init__(
        self,
        size: int = 32,
        *,
        channels: int = 2,
        diffusivity: tuple[float, ...] = (0.15, 0.08),
        damping: tuple[float, ...] = (0.05, 0.03),
        wind: float = 0.6,
        regimes: int = 4,
        switch: float = 0.05,
        source_rate: float = 0.3,
        source_width: float = 1.5,
        source_life: float = 8.0,
        source_amplitude: float = 1.0,
        noise: float = 0.02,
        spinup: int = 100,
        max_steps: int = MAX_STEPS,
    ) -> None:
        if size < 8:
            raise ValueError(f"fields needs size >= 8 cells, got {size}")
        if not 1 <= channels <= len(CHANNELS):
            raise ValueError(f"channels must be 1 or 2, got {channels}")
        kappa, mu = np.asarray(diffusivity[:channels], float), np.asarray(damping[:channels], float)
        if len(kappa) != channels or len(mu) != channels:
            raise ValueError(f"need a diffusivity and a damping per channel ({channels}), got {diffusivity}, {damping}")
        if (kappa < 0).any() or (mu < 0).any():
            raise ValueError(f"diffusivity and damping must be >= 0, got {diffusivity}, {damping}")
        if regimes < 1 or not 0 <= switch <= 1 or source_rate < 0 or source_width <= 0 or source_life <= 0:
            raise ValueError(
                f"need regimes >= 1, 0 <= switch <= 1, source_rate >= 0, source_width > 0, source_life > 0; got "
                f"{regimes}, {switch}, {source_rate}, {source_width}, {source_life}"
            )
        if noise < 0 or source_amplitude < 0:
            raise ValueError(f"noise and source_amplitude must be >= 0, got {noise}, {source_amplitude}")
        if max_steps < 1 or spinup < 0:
            raise ValueError(f"need max_steps >= 1 and spinup >= 0, got {max_steps}, {spinup}")
        self.size, self.channels = int(size), int(channels)
        self.kappa, self.mu = kappa, mu
        self.switch, self.source_rate = float(switch), float(source_rate)
        self.source_width, self.source_life, self.noise = float(source_width), float(source_life), float(noise)
        self.source_amplitude = float(source_amplitude)
        self.spinup, self.max_steps = int(spinup), int(max_steps)
        angles = 2 * np.pi * np.arange(regimes) / regimes
        self.winds = wind * np.stack([np.cos(angles), np.sin(angles)], axis=1)  # [R, 2] (u_x, u_y) cells/step
        k = 2 * np.pi * np.fft.fftfreq(self.size)  # rad per cell
        self.ky, self.kx = np.meshgrid(k, k, indexing="ij")
        self.k2 = self.kx**2 + self.ky**2
        # One transport factor per regime and channel: [R, C, n, n] complex.
        self.transport = np.exp(
            -(self.kappa[None, :, None, None] * self.k2 + self.mu[None, :, None, None])
            - 1j * (self.winds[:, 0, None, None, None] * self.kx + self.winds[:, 1, None, None, None] * self.ky)
        )
        self.spec = WorldSpec(
            name="fields",
            layout="grid",
            frame_shape=(self.channels, self.size, self.size),
            value_kind="real",
            action=ActionSpace(),
            variables=CHANNELS[: self.channels],
            periodic=True,
        )
        self.reset()

    # --- simulation -------------------------------------------------------------------------

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Start from zero fields and spin up `spinup` steps (a fresh generator from `seed`); return the first frame."""
        self.rng = np.random.default_rng(seed)
        self.phi = np.zeros((self.channels, self.size, self.size))
        self.regime = int(self.rng.integers(len(self.winds)))
        self.sources = np.zeros((0, 3 + self.channels))  # rows: y, x, age, amplitude per channel
        for _ in range(self.spinup):
            self._advance()
        self.t = 0
        return self.render()

    def step(self, action: Any = None) -> tuple[np.ndarray, float, bool]:
        """Advance one step (no action); return (frame, 0.0, done at max_steps)."""
        check_no_action("fields", action)
        self._advance()
        self.t += 1
        return self.render(), 0.0, self.t >= self.max_steps

    def _advance(self) -> None:
        rng = self.rng
        if len(self.winds) > 1 and rng.random() < self.switch:  # the wind turns to another regime
            self.regime = int((self.regime + rng.integers(1, len(self.winds))) % len(self.winds))
        self.phi = np.fft.ifft2(np.fft.fft2(self.phi) * self.transport[self.regime]).real
        born = rng.poisson(self.source_rate)
        if born:
            pos = rng.uniform(0, self.size, size=(born, 2))
            amp = (
                self.source_amplitude
                * rng.uniform(0.5, 1.5, size=(born, 1))
                * np.concatenate([np.ones((born, 1)), rng.uniform(0.2, 1.0, (born, self.channels - 1))], 1)
            )
            self.sources = np.concatenate([self.sources, np.concatenate([pos, np.zeros((born, 1)), amp], 1)])
        if len(self.sources):
            strength = self.sources[:, 3:] * np.exp(-self.sources[:, 2:3] / self.source_life)  # [S, C]
            self.phi += np.einsum("sc,syx->cyx", strength, self.blobs(self.sources[:, :2]))
            self.sources[:, 2] += 1
            self.sources = self.sources[self.sources[:, 2] < 5 * self.source_life]  # below 1% of its start: gone
        if self.noise:
            self.phi += self.noise * rng.standard_normal(self.phi.shape)

    def blobs(self, centres: np.ndarray) -> np.ndarray:
        """[S, n, n] periodic Gaussians of width `source_width` around centres [S, 2] (y, x)."""
        cells = np.arange(self.size)
        d = (cells[None, :, None] - centres[:, None, :] + self.size / 2) % self.size - self.size / 2  # [S, n, 2]
        g = np.exp(-0.5 * (d / self.source_width) ** 2)
        return g[:, :, None, 0] * g[:, None, :, 1]

    def render(self) -> np.ndarray:
        """The current fields, float32 (C, n, n)."""
        return self.phi.astype(np.float32)

    def read_steps(self, before: np.ndarray, after: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Read steps before → after ([..., C, n, n] each, any source: the world, a model) back as this world's physics.

        Returns (regime [...], residual [..., C, n, n]): the wind regime whose exact transport of
        `before` (shift and diffusion of one step) lies nearest `after` in least squares, and what
        that transport leaves unexplained — the step's source emission and noise, plus, for a
        model's step, its error. On the simulator's own steps the regime read back is the true one
        in all but a fraction of a percent of steps (tested).
        """
        if before.shape != after.shape or before.shape[-3:] != (self.channels, self.size, self.size):
            raise ValueError(
                f"expected two arrays of frames [..., {self.channels}, {self.size}, {self.size}], "
                f"got {before.shape} and {after.shape}"
            )
        moved = np.fft.ifft2(np.fft.fft2(before)[..., None, :, :, :] * self.transport).real  # [..., R, C, n, n]
        residual = after[..., None, :, :, :] - moved
        regime = (residual**2).sum(axis=(-1, -2, -3)).argmin(-1)
        return regime, np.take_along_axis(residual, regime[..., None, None, None, None], axis=-4)[..., 0, :, :, :]

    def read_events(self, context: np.ndarray, futures: np.ndarray) -> dict[str, np.ndarray]:
        """Read an ensemble's chance events back as this world's physics (`read_steps`, then `source_births`).

        context [S, L, C, n, n] (L ≥ 2), futures [S, M, H, C, n, n] (the simulator's or a model's).
        Returns regime [S, M, H] (the wind read at each step), start_regime [S] (the last context
        step's), births [S, M, H] (new sources a step), strength [B, EVENT_AGES] (the emission of each
        birth early enough to be followed, by age) and field [S, M, H, n, n] (the first channel).
        """
        s, m, h = futures.shape[:3]
        if context.ndim != futures.ndim - 1 or context.shape[1] < 2 or context.shape[0] != s:
            raise ValueError(
                f"expected contexts [{s}, L >= 2, ...] for futures {list(futures.shape)}, got {list(context.shape)}"
            )
        start_regime, start_residual = self.read_steps(context[:, -2], context[:, -1])
        regime = np.zeros((s, m, h), dtype=np.int64)
        born = np.zeros((s, m, h), dtype=np.int64)
        curves = []  # emission at ages 0..EVENT_AGES−1 of births early enough to be followed that long
        for i in range(s):  # one start at a time: read_steps holds every regime's transport of every frame
            start = np.repeat(context[i, None, -1:], m, axis=0)  # [M, 1, C, n, n]
            frames = np.concatenate([start, futures[i]], axis=1)  # [M, H + 1, C, n, n]
            regime[i], residual = self.read_steps(frames[:, :-1], frames[:, 1:])  # residual [M, H, C, n, n]
            emitted = residual[:, :, 0]  # [M, H, n, n]
            before = np.broadcast_to(start_residual[i, 0], (m, 1, self.size, self.size))  # the last context step's
            previous = np.concatenate([before, emitted[:, :-1]], axis=1)  # [M, H, n, n]
            peaks = source_births(previous, emitted)  # [B, 4]: member, step, y, x
            born[i] = np.bincount(peaks[:, 0] * h + peaks[:, 1], minlength=m * h).reshape(m, h)
            peaks = peaks[peaks[:, 1] + EVENT_AGES <= h]
            curves.append(emission(emitted, peaks))
        strength = np.concatenate(curves) if curves else np.zeros((0, EVENT_AGES))
        field = futures[:, :, :, 0]
        return {"regime": regime, "start_regime": start_regime, "births": born, "strength": strength, "field": field}

    # --- branching --------------------------------------------------------------------------

    def get_state(self) -> dict[str, Any]:
        """A copy of the complete state, the generator's included."""
        return {
            "phi": self.phi.copy(),
            "regime": self.regime,
            "sources": self.sources.copy(),
            "t": self.t,
            "rng": generator_state(self.rng),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore a state from `get_state` exactly."""
        phi = np.asarray(state["phi"], dtype=np.float64)
        if phi.shape != (self.channels, self.size, self.size) or not np.isfinite(phi).all():
            raise ValueError(
                f"expected finite fields of shape ({self.channels}, {self.size}, {self.size}), got shape {phi.shape}"
            )
        self.phi, self.regime, self.t = phi.copy(), int(state["regime"]), int(state["t"])
        self.sources = np.asarray(state["sources"], dtype=np.float64).reshape(-1, 3 + self.channels).copy()
        self.rng = restore_generator(state["rng"])

    def reseed(self, seed: int) -> None:
        """Replace the generator, so a restored state continues with fresh noise."""
        self.rng = np.random.default_rng(seed)


#: A source birth, read back from a step's residual (`Fields.read_steps`): a blob of the first
#: channel's residual above NEW_EMISSION where the previous step's stayed below OLD_EMISSION
#: within a cell (a live source emits in place every step).
NEW_EMISSION, OLD_EMISSION = 0.3, 0.15
#: A birth's emission is followed at ages 0..EVENT_AGES − 1.
EVENT_AGES = 9


def source_births(previous: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Peaks of new emission, [B, ndim] indices into `current` (residuals [..., n, n], each frame's
    after `previous`'s): per frame, the peak of each blob above NEW_EMISSION (4-connected, not
    wrapped) where the previous step's residual stayed below OLD_EMISSION within a cell (wrapped)."""
    lead = current.shape[:-2]
    quiet = ndimage.maximum_filter(previous, size=(1,) * len(lead) + (3, 3), mode="wrap") < OLD_EMISSION
    flat = current.reshape(-1, *current.shape[-2:])
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = ndimage.generate_binary_structure(2, 1)  # 4-connected within a frame, never across frames
    labels, count = ndimage.label(((current > NEW_EMISSION) & quiet).reshape(flat.shape), structure)
    peaks = np.array(ndimage.maximum_position(flat, labels, range(1, count + 1)), dtype=np.int64).reshape(-1, 3)
    places = np.column_stack([*np.unravel_index(peaks[:, 0], lead), peaks[:, 1], peaks[:, 2]])
    return places.astype(np.int64).reshape(-1, len(lead) + 2)


def emission(residual: np.ndarray, peaks: np.ndarray, ages: int = EVENT_AGES) -> np.ndarray:
    """[B, ages]: each source's emission at ages 0..ages − 1, the mean of `residual` [M, H, n, n] over
    the 3×3 cells round its peak (member, step, y, x) in that step and the ones after (wrapping at the edges)."""
    n = residual.shape[-1]
    j, k, y, x = (peaks[:, c, None, None, None] for c in range(4))  # [B, 1, 1, 1]
    d = np.arange(-1, 2)
    rows, cols = (y + d[:, None]) % n, (x + d) % n  # [B, 1, 3, 1], [B, 1, 1, 3]
    return residual[j, k + np.arange(ages)[:, None, None], rows, cols].mean(axis=(-1, -2))  # [B, ages]


#: Every cell of a field changes every step, so the pixel weights made for sparse games (motion,
#: surprise, rare events: a pong ball is 4 of 1,024 pixels) would weigh every cell alike —
#: a uniform ×21 loss that only makes gradient clipping bite. Plain EDM weighting instead.
TRAINING_DEFAULTS = {"motion_weight": 0.0, "surprise_weight": 0.0, "event_weight": 0.0}

#: Chosen on validation starts of a 6,750-step `small` model (docs/research-log.md, "Fields answer to
#: where sampling starts too"): 32 Euler steps with churn 2 from σ = 3 instead of the previous 8
#: from the library's σ = 5: spread/skill 1.10 / 0.78 at leads 1 / 15 instead of 0.64 / 0.44, spectra 0.45–1.29
#: of the truth's instead of 0.16–1.00, CRPS lower at every lead shown; on held-out starts (32 × 16
#: members): skill vs oracle 0.86–0.91, spread/skill 0.73–1.23 to saturation. Four times the cost
#: of 8 steps; the higher the starting level, the emptier the field (free-run mean 0.35 vs 0.70 from σ = 5).
SAMPLER_DEFAULTS = {"steps": 32, "churn": 2.0, "sigma_max": 3.0}

"""Pictures every domain draws with: the forecasters' colours, grid frames as images, and animations (GIF).

Each domain's own pictures are in its package (`diffworld.domains.<domain>.pictures`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

#: A forecaster's colour in every plot, by name.
COLORS = {
    "model": "#d62728", "persistence": "#7f7f7f", "climatology": "#2ca02c", "oracle": "#1f77b4",
    "mean_field": "#9467bd", "ar1": "#ff7f0e",
}  # fmt: skip


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

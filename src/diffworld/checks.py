"""Checks of what a run is given, where it enters: numbers, devices, output paths, memory.

Each raises a one-line ValueError saying what was expected and what was found, so a config's
`__post_init__`, a library call and the command line refuse the same input with the same words.
"""

from __future__ import annotations

import math
import numbers
import os
from pathlib import Path
from typing import Any

import torch

#: The largest seed every random generator here accepts (torch's take 64 bits, signed where it counts).
MAX_SEED = 2**63 - 1


def check_int(where: str, value: Any, least: int = 0, most: int | None = None) -> None:
    """Raise ValueError unless `value` is an integer (a NumPy one too, not a bool) in [least, most]."""
    ok = (
        isinstance(value, numbers.Integral)
        and not isinstance(value, bool)
        and value >= least
        and (most is None or value <= most)
    )
    if not ok:
        bound = f"in [{least}, {most}]" if most is not None else f">= {least}"
        raise ValueError(f"{where}: expected an integer {bound}, found {value!r}")


def check_number(
    where: str,
    value: Any,
    least: float | None = None,
    most: float | None = None,
    above: float | None = None,
    below: float | None = None,
) -> None:
    """Raise ValueError unless `value` is a finite int or float (not a bool) >= least, <= most, > above and < below."""
    finite = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    ok = finite and (least is None or value >= least) and (most is None or value <= most)
    ok = ok and (above is None or value > above) and (below is None or value < below)
    if not ok:
        bounds = [
            f"{sign} {bound:g}"
            for bound, sign in ((least, ">="), (above, ">"), (most, "<="), (below, "<"))
            if bound is not None
        ]
        raise ValueError(
            f"{where}: expected a finite number{' ' + ' and '.join(bounds) if bounds else ''}, found {value!r}"
        )


def check_device(device: str | torch.device, where: str = "device") -> torch.device:
    """The torch device `device` names, or ValueError if there is no such device on this machine
    (an unknown name, CUDA without a GPU or a CUDA build of torch, a GPU index past the last)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"{where}: expected cpu, cuda, cuda:<index> or mps, found {str(device)!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            found = "no usable CUDA GPU" if torch.version.cuda else "a torch built without CUDA"
            raise ValueError(f"{where} {str(device)!r}: expected a CUDA GPU, found {found}; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"{where} {str(device)!r}: expected a GPU index below {torch.cuda.device_count()}, found {dev.index}"
            )
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"{where} {str(device)!r}: expected an Apple GPU (MPS), found none; use --device cpu")
    elif dev.type != "cpu":
        raise ValueError(f"{where}: expected cpu, cuda, cuda:<index> or mps, found {str(device)!r}")
    return dev


def check_output_dir(path: str | Path, where: str = "output") -> Path:
    """`path` as a folder a run may write into: nothing there yet, or a folder, with every part of
    the path above it a folder and the nearest existing one writable. ValueError otherwise."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{where} {path}: expected a folder (or nothing yet), found a file")
    _check_parents(path, where)
    return path


def check_output_file(path: str | Path, where: str = "output", suffixes: tuple[str, ...] = ()) -> Path:
    """`path` as a file a run may write: not a folder, with a suffix among `suffixes` (if given),
    every part of the path above it a folder and the nearest existing one writable."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{where} {path}: expected a file name, found a folder")
    if suffixes and path.suffix.lower() not in suffixes:
        raise ValueError(
            f"{where} {path}: expected a file name ending in {' or '.join(suffixes)}, "
            f"found {path.suffix or 'no suffix'!r}"
        )
    _check_parents(path, where)
    return path


def _check_parents(path: Path, where: str) -> None:
    """Every existing part of the path above `path` must be a folder, the nearest one writable."""
    for parent in path.absolute().parents:
        if not parent.exists():
            continue
        if not parent.is_dir():
            raise ValueError(f"{where} {path}: expected {parent} to be a folder, found a file")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ValueError(f"{where} {path}: expected to be able to write in {parent}, found no permission")
        return


def memory_bytes(device: torch.device) -> int | None:
    """Total memory of `device` (a CUDA GPU's, else the machine's RAM), or None where unknown."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):
        return None


def check_fits(nbytes: int, what: str, device: torch.device | str = "cpu") -> None:
    """Raise ValueError if `nbytes` (what one array of `what` takes) exceeds the memory of `device`."""
    total = memory_bytes(torch.device(device))
    if total is not None and nbytes > total:
        raise ValueError(
            f"{what}: expected at most the {_gib(total)} of memory this {torch.device(device).type} has, "
            f"found {_gib(nbytes)} needed; ask for fewer"
        )


def _gib(n: int) -> str:
    return f"{n / 2**30:.3g} GiB"


__all__ = [
    "MAX_SEED",
    "check_device",
    "check_fits",
    "check_int",
    "check_number",
    "check_output_dir",
    "check_output_file",
    "memory_bytes",
]

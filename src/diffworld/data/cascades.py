"""Observed cascades — who was reached, and when — on a user's graph, as an episode store.

    from diffworld.data.cascades import import_cascades
    import_cascades("runs/shares.zarr", "shares.csv", graph="follows.csv", step=3600.0, directed=True)
    diffworld train --data runs/shares.zarr --out runs/shares-model

The table holds one row per node reached: a cascade id, the node's label (as in the graph) and the
time it was reached, a real number in any unit (`.csv` or `.tsv`, a header naming the `cascade`,
`node` and `time` columns). Each cascade becomes one episode of the cascade world's independent-
cascade encoding, in steps of `step` time units from its first time: a node is Infected in the
step it was reached, Removed in every later one, Susceptible before. One frame after the last
step holds nobody Infected, as a finished cascade does.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from diffworld.data.store import EpisodeStore
from diffworld.spec import ActionSpace, WorldSpec
from diffworld.worlds.cascade import I, R, S, graph_of
from diffworld.worlds.graphs import SocialGraph, node_label, text_rows

COLUMNS = ("cascade", "node", "time")


def read_cascades(path: str | Path, graph: SocialGraph) -> dict[str, list[tuple[int, float]]]:
    """{cascade id: [(node index, time), ...] in the table's order} from the table at `path`,
    checked row by row against `graph`: a one-line ValueError names the file and line of an unknown
    node, a node reached twice in one cascade, a time that is not a number, or one that goes back
    (earlier than the row before it in the same cascade)."""
    p = Path(path)
    sep = {".csv": ",", ".tsv": "\t"}.get(p.suffix.lower())
    if sep is None:
        raise ValueError(f"{p}: expected a cascade table ending in .csv or .tsv, found {p.suffix or 'no suffix'!r}")
    if not p.is_file():
        raise ValueError(f"{p}: expected a cascade table, found {'a directory' if p.exists() else 'nothing'}")
    rows = text_rows(p, sep, "a cascade table")
    if not rows:
        raise ValueError(f"{p}: expected a header ({', '.join(COLUMNS)}) and rows, found an empty file")
    head = [f.lower() for f in rows[0][1]]
    missing = [c for c in COLUMNS if c not in head]
    if missing:
        raise ValueError(f"{p}: expected a header with columns {', '.join(COLUMNS)}, found {', '.join(head)}")
    at = [head.index(c) for c in COLUMNS]
    index = {node_label(str(v)): k for k, v in enumerate(graph.labels)}
    cascades: dict[str, list[tuple[int, float]]] = {}
    seen: dict[str, dict[int, int]] = {}
    for line, fields in rows[1:]:
        if len(fields) < len(head):
            raise ValueError(f"{p}, line {line}: expected {len(head)} fields, found {len(fields)}")
        name, label, text = (fields[a] for a in at)
        node = index.get(node_label(label))
        if node is None:
            raise ValueError(f"{p}, line {line}: node {label!r} is not in the graph")
        try:
            time = float(text)
        except ValueError:
            raise ValueError(f"{p}, line {line}: expected a number as the time, found {text!r}") from None
        if not math.isfinite(time):
            raise ValueError(f"{p}, line {line}: expected a finite time, found {text!r}")
        steps = cascades.setdefault(name, [])
        if steps and time < steps[-1][1]:
            raise ValueError(
                f"{p}, line {line}: cascade {name!r} goes back in time ({time:g} after {steps[-1][1]:g}); "
                "sort each cascade's rows by time"
            )
        first = seen.setdefault(name, {})
        if node in first:
            raise ValueError(
                f"{p}, line {line}: node {label!r} is reached twice in cascade {name!r} (line {first[node]})"
            )
        first[node] = line
        steps.append((node, time))
    if not cascades:
        raise ValueError(f"{p}: expected rows after the header, found none")
    return cascades


def cascade_frames(reached: list[tuple[int, float]], nodes: int, step: float) -> np.ndarray:
    """[T, nodes, 3] one-hot S/I/R frames of one cascade, (node, time) pairs binned in `step` units."""
    times = np.array([t for _, t in reached])
    bins = np.floor((times - times.min()) / step).astype(np.int64)
    when = np.full(nodes, np.iinfo(np.int64).max)
    when[[n for n, _ in reached]] = bins
    k = np.arange(bins.max() + 2)[:, None]  # the steps, then one with nobody Infected
    states = np.where(when == k, I, np.where(when < k, R, S))
    return np.eye(3, dtype=np.float32)[states]


def import_cascades(
    path: str | Path,
    table: str | Path,
    graph: str | Path | nx.Graph,
    step: float,
    directed: bool = False,
) -> EpisodeStore:
    """A new episode store at `path` holding the cascades of `table` on `graph` (a graph file, a
    built-in name or a networkx graph), in steps of `step` time units. Nothing is written unless
    every row is good."""
    if not (isinstance(step, (int, float)) and math.isfinite(step) and step > 0):
        raise ValueError(f"step: expected a positive number of time units, found {step!r}")
    social = graph_of(graph, directed=directed)
    cascades = read_cascades(table, social)
    n = len(social.labels)
    frames = [cascade_frames(reached, n, float(step)) for reached in cascades.values()]
    spec = WorldSpec(
        name="cascade",
        layout="graph",
        frame_shape=(n, 3),
        value_kind="categorical",
        action=ActionSpace(),
        variables=("S", "I", "R"),
        value_range=(0.0, 1.0),
        edges=social.edges,
        step_duration=float(step),
    )
    meta: dict[str, Any] = {
        "source": "import_cascades",
        "table": str(table),
        "graph": str(graph) if isinstance(graph, (str, Path)) else "given",
        "directed": social.directed,
        "step": float(step),
        "cascades": list(cascades),
        "nodes": [str(v) for v in social.labels],
    }
    return EpisodeStore.from_arrays(path, spec, frames, meta=meta)

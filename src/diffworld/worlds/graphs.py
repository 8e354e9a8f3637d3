"""A user's graph for the cascade world: an edge-list file, GraphML, GEXF or a networkx graph.

Nodes are numbered 0..N−1 in sorted label order (labels of mixed types in the order of their text)
and keep their labels for every output. An edge's `weight`, where the source gives one, is the
probability that one try along it infects (a number in (0, 1]); a graph gives weights on all its
edges or on none. Directed edges spread one way only.

Edge lists (`.csv`, `.tsv`; `.txt`, `.edges`, `.edgelist` split on whitespace) hold one edge per
line: source, target and optionally weight, with an optional header naming `source` and `target`
(and `weight`) columns in any order.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import scipy.sparse as sp

#: Edge-list suffixes and their column separators (None: any run of whitespace).
EDGE_LISTS = {".csv": ",", ".tsv": "\t", ".txt": None, ".edges": None, ".edgelist": None}
GRAPH_FILES = (".graphml", ".gexf")
SUFFIXES = (*EDGE_LISTS, *GRAPH_FILES)


@dataclass(frozen=True)
class SocialGraph:
    """A graph ready for the cascade world: nodes 0..N−1, their labels, and who can infect whom."""

    #: Nodes 0..N−1 (a DiGraph when the source is directed), edge attribute "weight" where given.
    graph: nx.Graph
    #: The source's label of each node.
    labels: tuple[Any, ...]
    #: [N, N] 0/1, row v, column u: u can infect v (symmetric when undirected).
    adjacency: sp.csr_array
    #: [N, N] per-try infection probabilities on the same entries, or None: one β on every edge.
    probabilities: sp.csr_array | None

    @property
    def directed(self) -> bool:
        return self.graph.is_directed()

    @property
    def edges(self) -> tuple[tuple[int, int], ...]:
        """Each linked pair once as (low, high): the graph the model's attention reads."""
        return tuple(sorted({(min(u, v), max(u, v)) for u, v in self.graph.edges}))


def is_graph_file(source: Any) -> bool:
    """Whether `source` names a graph file (by its suffix) rather than a built-in graph."""
    return isinstance(source, Path) or (isinstance(source, str) and Path(source).suffix.lower() in SUFFIXES)


def read_graph(path: str | Path, directed: bool = False) -> nx.Graph:
    """The graph in the file `path` (an edge list, GraphML or GEXF), labels as in the file.

    `directed` applies to edge lists; GraphML and GEXF say themselves. Raises a one-line
    ValueError naming the file (and the line of an edge list) for anything it cannot read."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"{p}: expected a graph file ending in {', '.join(SUFFIXES)}, found {suffix or 'no suffix'!r}")
    if not p.is_file():
        raise ValueError(f"{p}: expected a graph file, found {'a directory' if p.exists() else 'nothing'}")
    if suffix in GRAPH_FILES:
        reader = nx.read_graphml if suffix == ".graphml" else nx.read_gexf
        try:
            g = reader(p)
        except Exception as e:  # networkx and the XML parser raise their own error types
            first = (str(e).strip().splitlines() or [""])[0][:200]
            raise ValueError(f"{p}: expected a {suffix[1:]} graph, found {type(e).__name__}: {first}") from None
        # Node ids are text in these formats: read integers as in an edge list, unless two would merge.
        names = {v: node_label(v) if isinstance(v, str) else v for v in g}
        return nx.relabel_nodes(g, names) if len(set(names.values())) == len(names) else g
    return _edge_list(p, EDGE_LISTS[suffix], directed)


def text_rows(path: Path, sep: str | None, what: str, comments: bool = False) -> list[tuple[int, list[str]]]:
    """(file line, stripped fields) of each line of the text file `path` that is not blank (nor a
    `#` comment, with `comments`), split on `sep` with CSV quoting, or on whitespace where None; a
    one-line ValueError naming `what` where the file is not UTF-8 text."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: expected {what} in text, found bytes that are not UTF-8 ({e.reason})") from None
    lines = [
        (i, line)
        for i, line in enumerate(text.splitlines(), 1)
        if line.strip() and not (comments and line.lstrip().startswith("#"))
    ]
    if sep is None:
        return [(i, line.split()) for i, line in lines]
    fields = csv.reader([t for _, t in lines], delimiter=sep)
    return [(i, [f.strip() for f in row]) for (i, _), row in zip(lines, fields)]


def _edge_list(path: Path, sep: str | None, directed: bool) -> nx.Graph:
    rows = text_rows(path, sep, "an edge list", comments=True)
    if not rows:
        raise ValueError(f"{path}: expected an edge list, found no edges")
    head = [f.lower() for f in rows[0][1]]
    if "source" in head or "target" in head:
        if "source" not in head or "target" not in head:
            raise ValueError(f"{path}: expected a header with source and target columns, found {', '.join(head)}")
        columns = {name: head.index(name) for name in ("source", "target", "weight") if name in head}
        rows = rows[1:]
        if not rows:
            raise ValueError(f"{path}: expected an edge list, found no edges")
    elif len(head) in (2, 3):
        columns = {"source": 0, "target": 1} | ({"weight": 2} if len(head) == 3 else {})
    else:
        raise ValueError(
            f"{path}: expected 2 columns (source, target) or 3 (and weight), found {len(head)}; "
            "or name them in a header"
        )
    width = max(columns.values()) + 1
    g = nx.DiGraph() if directed else nx.Graph()
    for line, fields in rows:
        if len(fields) < width or not all(fields[c] for c in columns.values()):
            raise ValueError(f"{path}, line {line}: expected {', '.join(columns)}, found {len(fields)} field(s)")
        u, v = node_label(fields[columns["source"]]), node_label(fields[columns["target"]])
        if g.has_edge(u, v):
            raise ValueError(f"{path}, line {line}: the edge {u} – {v} is given twice")
        attrs = {}
        if "weight" in columns:
            value = fields[columns["weight"]]
            try:
                attrs["weight"] = float(value)
            except ValueError:
                raise ValueError(f"{path}, line {line}: expected a number as the weight, found {value!r}") from None
        g.add_edge(u, v, **attrs)
    return g


def node_label(text: str) -> Hashable:
    """A node label as written: an integer where the text is one, else the text."""
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        return text


def social_graph(g: nx.Graph, where: str = "graph") -> SocialGraph:
    """Check `g` (labels any hashables, directed or not, weights on all edges or none) and number its
    nodes. `where` names it in the errors (a file's path)."""
    if g.is_multigraph():
        raise ValueError(f"{where}: expected a simple graph, found a multigraph (parallel edges)")
    if g.number_of_nodes() < 2 or g.number_of_edges() == 0:
        raise ValueError(
            f"{where}: expected at least 2 nodes and 1 edge, found {g.number_of_nodes()} and {g.number_of_edges()}"
        )
    loops = list(nx.selfloop_edges(g))
    if loops:
        raise ValueError(f"{where}: expected no self-loops, found {len(loops)} (node {loops[0][0]!r} links to itself)")
    weights = [d.get("weight") for _, _, d in g.edges(data=True)]
    given = sum(w is not None for w in weights)
    if 0 < given < len(weights):
        raise ValueError(f"{where}: expected weights on every edge or on none, found them on {given} of {len(weights)}")
    if given:
        bad = next((w for w in weights if not (isinstance(w, (int, float)) and 0 < float(w) <= 1)), None)
        if bad is not None or any(math.isnan(float(w)) for w in weights):
            raise ValueError(f"{where}: expected edge weights in (0, 1] (infection probabilities), found {bad!r}")
    labels = tuple(sorted(g.nodes, key=_order))
    index = {v: i for i, v in enumerate(labels)}
    numbered = nx.DiGraph() if g.is_directed() else nx.Graph()
    numbered.add_nodes_from(range(len(labels)))
    for u, v, d in g.edges(data=True):
        numbered.add_edge(index[u], index[v], **({"weight": float(d["weight"])} if given else {}))
    nodes = range(len(labels))
    # networkx's matrix holds A[u, v] for an edge u -> v; the spread reads who infects v: row v.
    out = nx.to_scipy_sparse_array(numbered, nodelist=nodes, weight="weight" if given else None, format="csr")
    into = sp.csr_array(out.T)
    into.sort_indices()
    adjacency = sp.csr_array((np.ones(into.nnz, dtype=np.int32), into.indices, into.indptr), shape=into.shape)
    probabilities = sp.csr_array(into.astype(np.float64)) if given else None
    return SocialGraph(numbered, labels, adjacency, probabilities)


def _order(label: Any) -> tuple[int, Any]:
    """Sort key of node labels: numbers by value, then everything else by its text."""
    if isinstance(label, (int, float, np.integer, np.floating)) and not isinstance(label, bool):
        return (0, float(label))
    return (1, str(label))

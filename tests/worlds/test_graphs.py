"""A user's graph in the cascade world: edge lists, GraphML, GEXF, networkx; weights, direction, labels."""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import scipy.sparse as sp

from diffworld.domains.epidemics.scores import centrality_baselines, mean_field
from diffworld.worlds import make_world
from diffworld.worlds.cascade import I, S, epidemic_threshold, spread_step
from diffworld.worlds.graphs import read_graph, social_graph


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_edge_list_with_header_keeps_labels_weights_and_direction(tmp_path: Path) -> None:
    path = write(tmp_path / "g.csv", "weight,target,source\n0.5,bob,alice\n1,carol,bob\n0.25,alice,carol\n")
    world = make_world("cascade", graph=str(path), model="ic", directed=True)
    assert world.node_names == ("alice", "bob", "carol") and world.graph.is_directed()
    # row v, column u: the probability that u infects v; alice -> bob at 0.5.
    p = world.transmission.toarray()
    assert np.allclose(p, [[0, 0, 0.25], [0.5, 0, 0], [0, 1.0, 0]])
    assert world.spec.edges == ((0, 1), (0, 2), (1, 2))
    assert world.beta == pytest.approx((0.5 + 1 + 0.25) / 3)


@pytest.mark.parametrize("suffix", [".tsv", ".txt", ".graphml", ".gexf"])
def test_every_format_reads_the_same_graph(tmp_path: Path, suffix: str) -> None:
    g = nx.Graph()
    g.add_edge(1, 2, weight=0.5)
    g.add_edge(2, 10, weight=0.2)
    path = tmp_path / f"g{suffix}"
    if suffix == ".tsv":
        write(path, "1\t2\t0.5\n2\t10\t0.2\n")
    elif suffix == ".txt":
        write(path, "# a comment line\n1 2 0.5\n\n2   10 0.2\n")
    elif suffix == ".graphml":
        nx.write_graphml(g, path)
    else:
        nx.write_gexf(g, path)
    world = make_world("cascade", graph=str(path))
    assert world.node_names == (1, 2, 10)  # integers sort by value, in every format
    assert np.allclose(world.transmission.toarray(), [[0, 0.5, 0], [0.5, 0, 0.2], [0, 0.2, 0]])


def test_a_networkx_graph_is_taken_as_it_is() -> None:
    g = nx.DiGraph([("x", "y"), ("y", "z")])
    world = make_world("cascade", graph=g, model="ic", beta=1.0, seed_nodes=[2])  # z: infects nobody
    world.reset(seed=0)
    world.step()
    assert (world.states == [S, S, 2]).all()  # z recovered, nobody caught it: edges point away from z
    world.set_seeds([0])  # x -> y -> z, one step each at β = 1
    world.reset(seed=0)
    assert [world.step()[1] for _ in range(2)] == [1.0, 1.0]


def test_weighted_spread_draws_each_edge_with_its_own_probability() -> None:
    # v0 has two infected neighbours, at 0.2 and 0.5: infected with 1 − 0.8 · 0.5 = 0.6.
    g = nx.Graph()
    g.add_edge(0, 1, weight=0.2)
    g.add_edge(0, 2, weight=0.5)
    social = social_graph(g)
    states = np.tile(np.array([S, I, I], dtype=np.int8), (20000, 1))
    new, _ = spread_step(social.adjacency, states, social.probabilities, 1.0, np.random.default_rng(0))
    assert (new[:, 0] == I).mean() == pytest.approx(0.6, abs=0.012)  # 4 standard errors
    # The mean-field gives the same first step exactly.
    world = make_world("cascade", graph=g, model="ic")
    assert mean_field(world, np.array([[S, I, I]]), 1)[0, 0, 0, I] == pytest.approx(0.6)


def test_a_matrix_of_one_beta_spreads_exactly_as_the_scalar() -> None:
    world = make_world("cascade", graph="lesmis", beta=0.3)
    states = np.zeros((16, world.num_nodes), dtype=np.int8)
    states[:, [11, 48]] = I
    a = b = states
    ra, rb = np.random.default_rng(5), np.random.default_rng(5)
    matrix = sp.csr_array(world.adjacency * 0.3)
    for _ in range(10):
        a, _ = spread_step(world.adjacency, a, 0.3, 0.2, ra)
        b, _ = spread_step(world.adjacency, b, matrix, 0.2, rb)
    assert (a == b).all() and (a != states).any()


def test_directed_threshold_and_centrality_read_out_edges() -> None:
    star = nx.DiGraph([(0, v) for v in range(1, 6)])  # a hub spreading to 5 leaves
    assert epidemic_threshold(np.array([0, 1, 1, 1, 1, 1]), np.array([5, 0, 0, 0, 0, 0])) == float("inf")
    cycle_in, cycle_out = np.ones(4), np.ones(4)
    assert epidemic_threshold(cycle_in, cycle_out) == 1.0  # every infection must cross every edge
    c = centrality_baselines(star)
    assert c["degree"].argmax() == 0 and c["degree"][1:].max() == 0


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("g.csv", "a\nb\n", "expected 2 columns"),
        ("g.csv", "# edges\na,b\n\nc\n", r"g.csv, line 4: expected source, target, found 1 field\(s\)"),
        ("g.csv", "source,weight\na,1\n", "expected a header with source and target columns"),
        ("g.csv", "a,b\nb,b\n", r"expected no self-loops, found 1 \(node 'b' links to itself\)"),
        ("g.csv", "a,b,0.5\nb,c,high\n", r"line 2: expected a number as the weight, found 'high'"),
        ("g.csv", "a,b,0.5\nb,c,1.5\n", r"expected edge weights in \(0, 1\]"),
        ("g.csv", "a,b\nb,a\n", r"line 2: the edge b – a is given twice"),
        ("g.csv", "", "found no edges"),
        ("g.json", "{}", "expected a graph file ending in"),
        ("g.graphml", "<graphml><broken", "expected a graphml graph, found"),
    ],
)
def test_bad_graph_files_end_in_one_line(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = write(tmp_path / name, text)
    with pytest.raises(ValueError, match=message) as info:
        make_world("cascade", graph=path)
    assert "\n" not in str(info.value)


def test_graph_options_that_do_not_apply_are_refused(tmp_path: Path) -> None:
    weighted = write(tmp_path / "w.csv", "a,b,0.5\n")
    with pytest.raises(ValueError, match="gives each edge's infection probability as its weight; beta applies"):
        make_world("cascade", graph=str(weighted), beta=0.1)
    with pytest.raises(ValueError, match="directed applies to edge-list files"):
        make_world("cascade", graph="karate", directed=True)
    with pytest.raises(ValueError, match="n applies to the generated graphs"):
        make_world("cascade", graph=str(weighted), n=5)
    with pytest.raises(ValueError, match="expected a graph file, found nothing"):
        read_graph(tmp_path / "missing.csv")
    partial = nx.Graph()
    partial.add_edge(0, 1, weight=0.5)
    partial.add_edge(1, 2)
    with pytest.raises(ValueError, match="weights on every edge or on none, found them on 1 of 2"):
        make_world("cascade", graph=partial)

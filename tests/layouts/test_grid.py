import pytest
import torch

from diffworld.layouts import GridLayout


@pytest.mark.parametrize("shape,patch", [((1, 32, 32), 8), ((3, 12, 20), 4), ((2, 6, 10), 2), ((1, 5, 7), 1)])
def test_round_trip_and_shapes(shape, patch):
    layout = GridLayout(shape, patch)
    x = torch.randn(2, 3, *shape)
    tokens = layout.to_tokens(x)
    assert tokens.shape == (2, 3, (shape[1] // patch) * (shape[2] // patch), shape[0] * patch * patch)
    assert torch.equal(layout.from_tokens(tokens), x)


def test_tokens_are_patches_in_row_major_order():
    layout = GridLayout((3, 12, 20), 4)
    x = torch.randn(1, 3, 12, 20)
    tokens = layout.to_tokens(x)[0]  # [15, 48]
    for index, (r, c) in [(0, (0, 0)), (1, (0, 4)), (5, (4, 0)), (14, (8, 16))]:
        patch = tokens[index].reshape(4, 4, 3).permute(2, 0, 1)
        assert torch.equal(patch, x[0, :, r : r + 4, c : c + 4])


def test_positions_distinguish_tokens():
    pos = GridLayout((1, 12, 20), 4).positions(16)
    assert pos.shape == (15, 16)
    assert torch.cdist(pos, pos).fill_diagonal_(1.0).min() > 0.1


def test_bad_patch_size_is_rejected():
    with pytest.raises(ValueError, match="must divide"):
        GridLayout((1, 12, 20), 8)


@pytest.mark.parametrize("periodic", [False, True])
def test_refiner_mends_the_edges_of_a_periodic_grid_like_any_patch_border(periodic):
    # Rolling the frame by whole patches must roll the refined frame on a torus; with zero
    # padding the rows and columns at the grid's edge come out differently.
    torch.manual_seed(0)
    layout = GridLayout((2, 8, 12), 4, periodic=periodic)
    refiner = layout.refiner(3)
    torch.nn.init.normal_(refiner.conv2.weight)  # opened: it starts as the linear path alone
    features = GridLayout((6, 8, 12), 4)  # the k = 3 features per value the refiner reads
    image = torch.randn(1, 6, 8, 12)
    rolled = image.roll((4, 4), dims=(-2, -1))
    with torch.no_grad():
        out, out_rolled = refiner(features.to_tokens(image)), refiner(features.to_tokens(rolled))
    equivariant = torch.allclose(out.roll((4, 4), dims=(-2, -1)), out_rolled, atol=1e-5)
    assert equivariant == periodic


def test_fields_models_pad_their_refiner_across_the_edges():
    from diffworld.layouts import make_layout
    from diffworld.spec import WorldSpec
    from diffworld.worlds import make_world

    spec = make_world("fields").spec
    assert spec.periodic and WorldSpec.from_dict(spec.to_dict()) == spec
    assert make_layout(spec, 4).refiner(2).conv1.padding_mode == "circular"
    assert make_layout(make_world("pong").spec, 8).refiner(2).conv1.padding_mode == "zeros"

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

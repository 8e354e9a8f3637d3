import torch

from diffworld.diffusion.guidance import autoguidance, classifier_free, guided


def test_guided_is_the_weak_denoiser_pushed_toward_the_strong_one():
    strong, weak = torch.tensor([1.0, 3.0]), torch.tensor([2.0, 2.0])
    assert torch.equal(guided(strong, weak, 1.0), strong) and torch.equal(guided(strong, weak, 0.0), weak)
    assert torch.equal(guided(strong, weak, 2.0), torch.tensor([0.0, 4.0]))


def test_wrappers_run_the_strong_denoiser_first_and_mix_as_their_papers_say():
    """The strong pass runs first (it may write the frame fed back to its cache); autoguidance
    mixes the model with the guide, classifier-free guidance the action with "no action"."""
    calls = []

    def model(x, sigma, actions):
        calls.append(("model", actions))
        return x * sigma + (0.0 if actions is None else actions)

    def guide(x, sigma, actions):
        calls.append(("guide", actions))
        return x

    x, a, null = torch.ones(2), torch.tensor([1.0, 2.0]), torch.zeros(2)
    auto = autoguidance(model, guide, 1.5)
    assert torch.equal(auto(x, 3.0, a), x + 1.5 * (x * 3.0 + a - x)) and calls == [("model", a), ("guide", a)]
    calls.clear()
    both = classifier_free(auto, a, null, 2.0)(x, 3.0)
    uncond = x + 1.5 * (x * 3.0 - x)
    assert torch.equal(both, uncond + 2.0 * (x + 1.5 * (x * 3.0 + a - x) - uncond))
    assert [c[0] for c in calls] == ["model", "guide", "model", "guide"] and calls[2][1] is null

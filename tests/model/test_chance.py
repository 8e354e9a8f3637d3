"""The chance code: its place in the DiT, its codebook, and a checkpoint that keeps it."""

from __future__ import annotations

import pytest
import torch

from diffworld.diffusion.sampling import SamplerConfig
from diffworld.dreamer import Dreamer
from diffworld.inputs import check_sampler
from diffworld.model import chance as chance_module
from diffworld.model.world_model import ModelConfig, WorldModel
from tests.conftest import tiny_model


def inputs(model, b=3, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((b, n) + tuple(model.spec.frame_shape), generator=g)
    return x, torch.rand(b, n, generator=g) + 0.1, torch.randint(0, 3, (b, n), generator=g), torch.arange(n)


def test_a_code_changes_only_the_last_frame(odd_spec):
    model = tiny_model(odd_spec, chance=4)
    x, sigma, a, t = inputs(model)
    codes = torch.randn(2, 3, model.config.dit.chance_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        one, two = (model.denoiser(x, sigma, a, t, code=c) for c in codes)
        plain = model.denoiser(x, sigma, a, t)
    assert torch.equal(one[:, :-1], two[:, :-1]) and torch.equal(one[:, :-1], plain[:, :-1])
    assert (one[:, -1] - two[:, -1]).abs().max() > 1e-3


def test_features_are_the_last_frames_tokens(odd_spec):
    model = tiny_model(odd_spec, chance=4)
    x, sigma, a, t = inputs(model)
    with torch.no_grad():
        out, features = model.denoiser(x, sigma, a, t, features=True)
        assert torch.equal(out, model.denoiser(x, sigma, a, t))
    assert features.shape == (3, model.layout.num_tokens, model.config.dit.width)
    chance = model.denoiser.net.chance
    assert chance.event_logits(features).shape == (3,) and chance.code_logits(features).shape == (3, 4)


def test_bad_codes_are_named(odd_spec):
    x, sigma, a, t = inputs(tiny_model(odd_spec))
    with pytest.raises(ValueError, match="without one"):
        tiny_model(odd_spec).denoiser(x, sigma, a, t, code=torch.zeros(3, 8))
    with pytest.raises(ValueError, match=r"expected shape \[3, 8\], got \[3, 5\]"):
        tiny_model(odd_spec, chance=4).denoiser(x, sigma, a, t, code=torch.zeros(3, 5))


def test_the_encoder_learns_through_its_code():
    code = chance_module.ChanceCode(values=12, width=16, codes=6, dim=4).train()
    g = torch.Generator().manual_seed(0)
    new, before = torch.randn(5, 12, generator=g), torch.randn(5, 12, generator=g)
    q, index, loss = code.encode(new, before, g)
    assert q.shape == (5, 4) and index.shape == (5,) and torch.allclose(q.detach(), code.codebook[index].detach())
    (q.square().sum() + loss).backward()
    assert code.encoder[0].weight.grad.abs().sum() > 0  # straight through the quantiser


def test_idle_codes_restart_after_2_4_8_times_restart_every_calls(monkeypatch):
    monkeypatch.setattr(chance_module, "RESTART_EVERY", 2)
    code = chance_module.ChanceCode(values=12, width=16, codes=6, dim=4)
    g = torch.Generator().manual_seed(0)
    e, index = torch.randn(5, 4, generator=g), torch.tensor([0, 0, 1, 1, 0])  # codes 2..5 idle
    restarted = []
    for call in range(1, 10):
        before = code.codebook.detach().clone()
        code._restart_dead(e, index, g)
        moved = (code.codebook.detach() - before).abs().sum(1) > 0
        if moved.any():
            restarted.append(call)
            assert moved.tolist() == [False, False, True, True, True, True]
            assert torch.cdist(code.codebook.detach()[moved], e).amin(1).max() < 0.1  # onto encodings
    assert restarted == [2, 4, 8]


def test_the_chance_sampler_needs_a_code_and_no_guidance(odd_spec):
    with pytest.raises(ValueError, match="needs a model trained with a chance code"):
        check_sampler(odd_spec, SamplerConfig(method="chance"))
    with pytest.raises(ValueError, match="without guidance"):
        check_sampler(odd_spec, SamplerConfig(method="chance", guidance=2.0), chance=4)
    check_sampler(odd_spec, SamplerConfig(method="chance"), chance=4)


def test_a_decoder_of_its_own_decodes_the_codes_and_leaves_the_pass_without_one_to_the_backbone(odd_spec):
    model = tiny_model(odd_spec, chance=4, chance_decoder=True)
    net = model.denoiser.net
    assert net.decoder is not None and not hasattr(net, "chance_embed") and net.decoder.chance is None
    x, sigma, a, t = inputs(model)
    code = torch.randn(3, model.config.dit.chance_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain, coded = model.denoiser(x, sigma, a, t), model.denoiser(x, sigma, a, t, code=code)
        for p in net.decoder.parameters():
            p.add_(0.1)
        assert torch.equal(model.denoiser(x, sigma, a, t), plain)  # the decoder is not in the pass without a code
        assert (model.denoiser(x, sigma, a, t, code=code)[:, -1] - coded[:, -1]).abs().max() > 1e-3
        for p in net.blocks.parameters():
            p.add_(0.1)
        again = model.denoiser(x, sigma, a, t, code=code)
        assert torch.equal(again, model.denoiser(x, sigma, a, t, code=code))
        assert (model.denoiser(x, sigma, a, t) - plain).abs().max() > 1e-3
        # no_code: the decoder's pass without a code (the backbone's, were its weights the decoder's)
        net.load_state_dict({k: v for k, v in net.decoder.state_dict().items() if k in net.state_dict()}, strict=False)
        assert torch.allclose(
            model.denoiser(x, sigma, a, t, code=net.no_code(3)), model.denoiser(x, sigma, a, t), atol=1e-6
        )
    with pytest.raises(ValueError, match="not the backbone's cache"):
        model.denoiser(x, sigma, a, t, cache=net.new_cache(), code=code)
    with pytest.raises(ValueError, match=r"needs a chance code \(chance > 0\), found chance 0"):
        tiny_model(odd_spec, chance_decoder=True)
    with pytest.raises(ValueError, match=r"chance_prior 'decoder': needs a decoder of its own"):
        tiny_model(odd_spec, chance=4, chance_prior="decoder")
    with pytest.raises(ValueError, match=r"expected 'backbone' or 'decoder', found 'trunk'"):
        tiny_model(odd_spec, chance=4, chance_decoder=True, chance_prior="trunk")


def test_a_new_decoder_starts_as_the_backbone(odd_spec):
    torch.manual_seed(0)
    model = WorldModel(
        odd_spec, ModelConfig.preset("tiny", patch=4, frames=5, chance=4, chance_decoder=True), [0.1] * 3, [0.3] * 3
    )
    net = model.denoiser.net
    decoder = net.decoder.state_dict()
    shared = [k for k in decoder if k in net.state_dict() and not k.startswith("chance")]
    assert len(shared) > 20 and all(torch.equal(decoder[k], net.state_dict()[k]) for k in shared)


@pytest.mark.parametrize("shift", [None, 20.0], ids=["data-rate", "every-frame-an-event"])
@pytest.mark.parametrize(
    "decoder",
    [{}, {"chance_decoder": True}, {"chance_decoder": True, "chance_prior": "decoder"}],
    ids=["backbone-decodes", "own-decoder", "own-decoder-and-prior"],
)
@pytest.mark.parametrize("use_cache", [True, False])
def test_a_chance_dream_is_the_same_with_or_without_the_cache_and_after_a_reload(
    odd_spec, tmp_path, use_cache, decoder, shift
):
    model = tiny_model(odd_spec, chance=4, **decoder)
    model.sampler = SamplerConfig(method="chance", sigma_ctx=0.05, event_shift=shift)
    ctx, acts = torch.rand(2, 2, 3, 12, 20), torch.randint(0, 3, (2, 3))  # 2 + 3 frames: the window of 5

    def dream(m, cache):
        dreamer = Dreamer(m, 2, generator=torch.Generator().manual_seed(0), use_cache=cache)
        dreamer.reset(ctx)
        return torch.stack([dreamer.step(acts[:, h]) for h in range(3)], dim=1)

    reference = dream(model, True)
    reloaded = WorldModel.from_pretrained(model.save_pretrained(tmp_path / "m"))
    assert reloaded.config.dit.chance == 4 and all(getattr(reloaded.config.dit, k) == v for k, v in decoder.items())
    assert torch.allclose(dream(reloaded, use_cache), reference, atol=1e-5)
    if shift is not None:  # every frame decoded: not the frames without a code
        model.sampler = SamplerConfig(method="chance", sigma_ctx=0.05, event_shift=-20.0)
        assert not torch.allclose(dream(model, True), reference, atol=1e-3)


def test_the_event_logit_is_the_tokens_odds_plus_a_global_term_that_starts_at_zero_and_can_veto(odd_spec):
    spec_model = WorldModel(odd_spec, ModelConfig.preset("tiny", patch=4, frames=5, chance=4), [0.1] * 3, [0.3] * 3)
    chance = spec_model.denoiser.net.chance
    features = torch.randn(3, 15, spec_model.config.dit.width, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        tokens = torch.logsumexp(chance.event(chance.norm(features))[..., 0], dim=1)
        assert torch.equal(chance.event_logits(features), tokens)  # a new term adds nothing yet
        chance.event[-1].bias.fill_(30.0)  # every token sure of an event...
        assert chance.events(features, shift=0.0).all()
        chance.event_global[-1].bias.fill_(-60.0)  # ... and the whole frame says no
        assert not chance.events(features, shift=0.0).any()


def test_a_checkpoint_saved_before_the_global_event_term_loads_with_it_at_zero(odd_spec, tmp_path):
    from safetensors.torch import load_file, save_file

    model = WorldModel(odd_spec, ModelConfig.preset("tiny", patch=4, frames=5, chance=4), [0.1] * 3, [0.3] * 3)
    model.save_pretrained(tmp_path)
    weights = load_file(str(tmp_path / "model.safetensors"))
    old = {k: v for k, v in weights.items() if ".chance.event_pool." not in k and ".chance.event_global." not in k}
    assert len(old) == len(weights) - 6  # the pool and the two layers, weights and biases
    save_file(old, str(tmp_path / "model.safetensors"))
    loaded = WorldModel.from_pretrained(tmp_path)
    fresh = ("event_pool", "event_global.0")  # drawn anew; the last layer, zero, makes them inert
    assert all(
        torch.equal(v, loaded.state_dict()[k])
        for k, v in model.state_dict().items()
        if not k.split(".chance.")[-1].startswith(fresh)
    )
    features = torch.randn(2, 15, model.config.dit.width, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(
            loaded.denoiser.net.chance.event_logits(features), model.denoiser.net.chance.event_logits(features)
        )
    del old["denoiser.net.chance.event.0.weight"]  # a tensor that was always there is still required
    save_file(old, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="missing .*chance.event.0.weight"):
        WorldModel.from_pretrained(tmp_path)

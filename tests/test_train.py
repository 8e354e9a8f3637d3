import json
import math
import re
import warnings
from dataclasses import replace

import pytest
import torch

from diffworld.data.windows import WindowSampler
from diffworld.diffusion.loss import LossConfig, window_loss
from diffworld.model.world_model import ModelConfig, WorldModel
from diffworld.train import StopTraining, TrainConfig, build_model, lr_at, native_bf16, train
from diffworld.worlds import collect_episodes, default_policy, make_world
from tests.conftest import DEVICES


@pytest.fixture(scope="module")
def pong_episodes():
    return collect_episodes(lambda: make_world("pong"), range(3), default_policy("pong"), max_steps=120)


def tiny_cfg(**kw):
    base = dict(steps=12, batch_size=4, lr=2e-3, warmup=2, log_every=4, checkpoint_every=6, seed=0)
    return TrainConfig(**{**base, **kw})


def new_model(episodes, seed=0, **dit):
    return build_model(make_world("pong").spec, episodes, ModelConfig.preset("tiny", **dit), seed=seed)


def params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_lr_schedule():
    cfg = TrainConfig(steps=100, lr=1.0, warmup=10, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(99, cfg) == pytest.approx(0.1, abs=1e-3)
    assert all(lr_at(i, cfg) >= lr_at(i + 1, cfg) for i in range(10, 99))


def held_loss(model, episodes, draws=8):
    """The denoising loss on fixed windows with fixed noise: the same number for the same weights."""
    batch = WindowSampler(episodes, model.frames).sample(32, torch.Generator().manual_seed(123))
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        frames = model.normalize(batch.frames)
        return (
            sum(float(window_loss(model.denoiser, frames, batch.actions, LossConfig(), gen)) for _ in range(draws))
            / draws
        )


def test_tiny_overfit_loss_falls(tmp_path, pong_episodes):
    """One short episode, many steps: the loss on fixed windows of it must fall well below its start."""
    data = pong_episodes[:1]
    model = new_model(data)
    before = held_loss(model, data)
    cfg = tiny_cfg(steps=500, lr=3e-3, warmup=20, checkpoint_every=1000)
    after = held_loss(train(model, data, cfg, tmp_path, progress=False).model, data)
    assert after < 0.5 * before, (before, after)


def test_training_is_seeded(tmp_path, pong_episodes):
    a = train(new_model(pong_episodes), pong_episodes, tiny_cfg(), tmp_path / "a", progress=False)
    b = train(new_model(pong_episodes), pong_episodes, tiny_cfg(), tmp_path / "b", progress=False)
    c = train(new_model(pong_episodes), pong_episodes, tiny_cfg(seed=1), tmp_path / "c", progress=False)
    assert torch.equal(params(a.model), params(b.model))
    assert not torch.equal(params(a.model), params(c.model))


class Killed(Exception):
    """Stands in for a process killed between two checkpoints."""


def kill_at(step):
    def hook(s, loss):
        if s == step:
            raise Killed

    return hook


@pytest.mark.parametrize("chance", [0, 4], ids=["plain", "chance-code"])
def test_resume_equals_uninterrupted(tmp_path, pong_episodes, chance, monkeypatch):
    monkeypatch.setattr("diffworld.model.chance.RESTART_EVERY", 4)  # idle codes restart across the cut
    dit = {"chance": chance} if chance else {}
    full = train(new_model(pong_episodes, **dit), pong_episodes, tiny_cfg(), tmp_path / "full", progress=False)
    # Killed at step 8: the checkpoint of step 6 survives, steps 7 and 8 are lost.
    with pytest.raises(Killed):
        train(
            new_model(pong_episodes, **dit), pong_episodes, tiny_cfg(), tmp_path / "cut", progress=False,
            on_step=kill_at(8),
        )  # fmt: skip
    assert json.loads((tmp_path / "cut/checkpoint/train_state.json").read_text())["step"] == 6
    # Resuming ignores the fresh model's own initial weights (another seed here).
    resumed = train(
        new_model(pong_episodes, seed=5, **dit), pong_episodes, tiny_cfg(), tmp_path / "cut", resume=True,
        progress=False,
    )  # fmt: skip
    assert resumed.steps == 12
    assert torch.equal(params(resumed.model), params(full.model))
    assert torch.equal(params(WorldModel.from_pretrained(tmp_path / "cut/checkpoint")), params(full.model))
    if chance:  # serves are over-drawn in training: a dream's event odds are brought down, and kept
        shift = WorldModel.from_pretrained(tmp_path / "cut/checkpoint").denoiser.net.chance.event_shift
        assert shift < -1 and shift == full.model.denoiser.net.chance.event_shift


def test_refuses_to_overwrite_a_run(tmp_path, pong_episodes):
    train(new_model(pong_episodes), pong_episodes, tiny_cfg(steps=2), tmp_path, progress=False)
    with pytest.raises(FileExistsError, match="already holds a training run"):
        train(new_model(pong_episodes), pong_episodes, tiny_cfg(steps=2), tmp_path, progress=False)


@pytest.mark.parametrize(
    "damage",
    [
        lambda c: (c / "train_state.json").unlink(),
        lambda c: (c / "train_state.json").write_text("{not json"),
        lambda c: (c / "train_state.json").write_text('{"step": "six"}'),
        lambda c: (c / "train_state.safetensors").unlink(),
        lambda c: (c / "train_state.safetensors").write_bytes((c / "train_state.safetensors").read_bytes()[:100]),
    ],
    ids=["state-missing", "state-not-json", "state-no-step", "tensors-missing", "tensors-truncated"],
)
def test_a_run_whose_state_cannot_be_read_is_refused_not_overwritten(tmp_path, pong_episodes, damage):
    train(new_model(pong_episodes), pong_episodes, tiny_cfg(steps=2), tmp_path, progress=False)
    ckpt = tmp_path / "checkpoint"
    damage(ckpt)
    before = (ckpt / "model.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="already holds a training run"):
        train(new_model(pong_episodes), pong_episodes, tiny_cfg(steps=2), tmp_path, progress=False)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(ckpt))}/train_state\.(json|safetensors): expected ") as err:
        train(new_model(pong_episodes), pong_episodes, tiny_cfg(steps=2), tmp_path, resume=True, progress=False)
    assert "\n" not in str(err.value)
    assert (ckpt / "model.safetensors").read_bytes() == before
    # Asked for in so many words, a new run replaces it.
    r = train(
        new_model(pong_episodes, seed=5), pong_episodes, tiny_cfg(steps=2), tmp_path, overwrite=True, progress=False
    )
    assert r.steps == 2 and (ckpt / "model.safetensors").read_bytes() != before
    with pytest.raises(ValueError, match="choose one"):
        train(
            new_model(pong_episodes),
            pong_episodes,
            tiny_cfg(steps=2),
            tmp_path,
            resume=True,
            overwrite=True,
            progress=False,
        )


def test_log_and_checkpoint_files(tmp_path, pong_episodes):
    r = train(new_model(pong_episodes), pong_episodes, tiny_cfg(), tmp_path, progress=False)
    lines = [json.loads(l) for l in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [l["step"] for l in lines] == [4, 8, 12]
    assert all(math.isfinite(l["loss"]) and l["steps_per_s"] > 0 for l in lines)
    files = sorted(p.name for p in (tmp_path / "checkpoint").iterdir())
    assert files == ["config.json", "model.safetensors", "train_state.json", "train_state.safetensors"]
    assert r.steps == 12


@pytest.mark.parametrize("device", DEVICES)
def test_forcing_mode_and_bf16_train(tmp_path, pong_episodes, device, monkeypatch):
    monkeypatch.setattr("diffworld.train.native_bf16", lambda dev: True)  # the warning has its own test
    cfg = tiny_cfg(steps=3, precision="bf16", device=device, loss=LossConfig(context="forcing", motion_weight=5.0))
    r = train(new_model(pong_episodes), pong_episodes, cfg, tmp_path, progress=False)
    assert math.isfinite(r.final_loss) and r.model.device.type == device


def test_bf16_on_a_cpu_without_bf16_kernels_warns(tmp_path, pong_episodes, monkeypatch):
    monkeypatch.setattr("diffworld.train.native_bf16", lambda dev: False)
    with pytest.warns(UserWarning, match="no native bf16 matmul"):
        train(
            new_model(pong_episodes),
            pong_episodes,
            tiny_cfg(steps=1, precision="bf16"),
            tmp_path / "bf16",
            progress=False,
        )
    with warnings.catch_warnings(record=True) as caught:  # fp32 on the same CPU: no such warning
        warnings.simplefilter("always")
        train(new_model(pong_episodes), pong_episodes, tiny_cfg(steps=1), tmp_path / "fp32", progress=False)
    assert not [w for w in caught if "bf16" in str(w.message)]
    assert isinstance(native_bf16(torch.device("cpu")), bool) and native_bf16(torch.device("cuda"))


def test_early_stopping_keeps_the_best_validated_weights(tmp_path, pong_episodes):
    """Scores 3, 1, 2 at steps 4, 8, 12: the weights of step 8 are returned and saved to best/."""
    scores, snapshots = iter([3.0, 1.0, 2.0]), []

    def validate(ema):
        snapshots.append(params(ema).clone())
        return next(scores)

    result = train(
        new_model(pong_episodes),
        pong_episodes,
        tiny_cfg(),
        tmp_path,
        progress=False,
        validate=validate,
        validate_every=4,
    )
    assert len(snapshots) == 3 and torch.equal(params(result.model), snapshots[1])
    assert result.best == {"step": 8, "validation": 1.0}
    assert not torch.equal(snapshots[1], snapshots[2])
    best = WorldModel.from_pretrained(tmp_path / "best")
    assert torch.equal(params(best), snapshots[1])
    assert json.loads((tmp_path / "best" / "config.json").read_text())["best"] == {"step": 8, "validation": 1.0}
    logged = [json.loads(x) for x in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert [r["validation"] for r in logged if "validation" in r] == [3.0, 1.0, 2.0]
    last = WorldModel.from_pretrained(tmp_path / "checkpoint")
    assert torch.equal(params(last), snapshots[2])  # checkpoint/ is the last state, for resuming


def test_a_validation_hook_can_stop_the_run_and_resume_goes_on(tmp_path, pong_episodes):
    """A hook raising StopTraining at step 4 of 12 ends the run there with its checkpoint saved;
    resuming trains the remaining steps."""

    def validate(ema):
        raise StopTraining(0.5)

    result = train(
        new_model(pong_episodes),
        pong_episodes,
        tiny_cfg(),
        tmp_path,
        progress=False,
        validate=validate,
        validate_every=4,
    )
    assert result.steps == 4 and result.best == {"step": 4, "validation": 0.5}
    assert json.loads((tmp_path / "checkpoint" / "train_state.json").read_text())["step"] == 4
    resumed = train(new_model(pong_episodes), pong_episodes, tiny_cfg(), tmp_path, resume=True, progress=False)
    assert resumed.steps == 12


def test_compiled_training_matches_eager(tmp_path, pong_episodes):
    """torch.compile changes how the step runs, not what it computes: the same losses to float
    rounding, and a checkpoint of the eager modules (no compiled wrapper in its names)."""
    cfg = tiny_cfg(steps=4, log_every=1, checkpoint_every=4)
    eager = train(new_model(pong_episodes), pong_episodes, cfg, tmp_path / "eager", progress=False)
    train(new_model(pong_episodes), pong_episodes, replace(cfg, compile=True), tmp_path / "compiled", progress=False)
    losses = {
        d: [json.loads(l)["loss"] for l in (tmp_path / d / "train_log.jsonl").read_text().splitlines()]
        for d in ("eager", "compiled")
    }
    assert len(losses["eager"]) == 4 and losses["compiled"] == pytest.approx(losses["eager"], rel=1e-4), losses
    loaded = WorldModel.from_pretrained(tmp_path / "compiled/checkpoint")
    assert loaded.state_dict().keys() == eager.model.state_dict().keys()
    assert (params(loaded) - params(eager.model)).abs().max() < 1e-2  # four Adam steps of ≤ lr each


def test_compiling_without_a_cpp_compiler_fails_before_training(tmp_path, pong_episodes, monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler++")
    with pytest.raises(ValueError, match=r"needs a C\+\+ compiler \(no-such-compiler\+\+, or another named by \$CXX\)"):
        train(new_model(pong_episodes), pong_episodes, tiny_cfg(steps=1, compile=True), tmp_path, progress=False)
    assert not tmp_path.joinpath("checkpoint").exists()
    with pytest.raises(ValueError, match="compile must be True or False"):
        tiny_cfg(compile="yes")


@pytest.mark.parametrize(
    "dit, match",
    [
        (dict(patch=7), r"patch size 7 must divide the frame's height 32 and width 32"),
        (dict(width=30, heads=1), r"the model width must be divisible by 4 for 2-D positions, got 30"),
        (
            dict(patch=1, width=16384, heads=2),
            r"5 copies of a model of 2 blocks of width 16384: expected at most the .* GiB of memory",
        ),
    ],
    ids=["patch", "width", "memory"],
)
def test_a_model_that_cannot_be_built_or_trained_here_is_refused_before_collecting(tmp_path, monkeypatch, dit, match):
    """Before the episodes are collected (minutes for a real run), the model is built on the meta
    device: a layout it cannot use, or more weights than memory holds, fail then in one line."""
    import diffworld.recipes as recipes

    monkeypatch.setattr(
        recipes, "collect_episodes", lambda *a, **k: pytest.fail("episodes collected before the model was checked")
    )
    monkeypatch.setattr("diffworld.checks.memory_bytes", lambda device: 2**30)
    with pytest.raises(ValueError, match=match):
        recipes.train_world("pong", tmp_path / "run", ModelConfig.preset("tiny", **dit), tiny_cfg(), episodes=2)
    assert not (tmp_path / "run").exists()


def test_a_truncated_training_state_is_refused_before_any_data_is_collected(tmp_path, pong_episodes, monkeypatch):
    import diffworld.recipes as recipes

    train(new_model(pong_episodes), pong_episodes, tiny_cfg(steps=2), tmp_path, progress=False)
    state = tmp_path / "checkpoint/train_state.safetensors"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    monkeypatch.setattr(
        recipes, "collect_episodes", lambda *a, **k: pytest.fail("episodes collected before the state was checked")
    )
    with pytest.raises(
        ValueError, match=r"train_state.safetensors: expected the run's saved tensors, found SafetensorError"
    ):
        recipes.train_world("pong", tmp_path, ModelConfig.preset("tiny"), tiny_cfg(steps=4), episodes=2, resume=True)


def test_a_file_where_the_run_directory_should_be_is_refused(tmp_path, pong_episodes):
    (tmp_path / "run").write_text("not a folder")
    with pytest.raises(ValueError, match=r"run directory .*run: expected a folder \(or nothing yet\), found a file"):
        train(new_model(pong_episodes), pong_episodes, tiny_cfg(steps=1), tmp_path / "run", progress=False)


def test_initialising_from_a_trained_model_copies_it_and_refuses_another_world_or_size(
    tmp_path, odd_spec, pong_episodes
):
    from diffworld.train import initialize_from
    from tests.conftest import tiny_model

    saved = tiny_model(odd_spec, seed=1).save_pretrained(tmp_path / "odd")
    model = tiny_model(odd_spec, seed=2, chance=4)
    fresh = initialize_from(model, saved)
    assert fresh and all(k.startswith("denoiser.net.chance") for k in fresh)
    source = WorldModel.from_pretrained(saved).state_dict()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in source.items())
    own = tiny_model(odd_spec, seed=2, chance=4, chance_decoder=True)
    fresh = initialize_from(own, saved)  # a decoder of its own starts as the source's backbone
    assert fresh and all(k.startswith(("denoiser.net.chance", "denoiser.net.decoder.chance_")) for k in fresh)
    decoded = {k: v for k, v in own.state_dict().items() if ".decoder." in k}
    assert len(decoded) > 20
    assert all(torch.equal(v, source[k.replace(".decoder.", ".", 1)]) for k, v in decoded.items() if "chance" not in k)
    with pytest.raises(ValueError, match="expected a model of the world 'pong'"):
        initialize_from(new_model(pong_episodes), saved)
    with pytest.raises(ValueError, match="expected shape"):
        initialize_from(tiny_model(odd_spec, width=64, heads=2), saved)


def test_parts_named_fresh_start_fresh_even_where_their_shape_differs(tmp_path, odd_spec):
    from diffworld.train import initialize_from
    from tests.conftest import tiny_model

    saved = tiny_model(odd_spec, seed=1, chance=4).save_pretrained(tmp_path / "four")
    more = tiny_model(odd_spec, seed=2, chance=8)  # twice the codes: codebook and code head change shape
    before = {k: v.clone() for k, v in more.state_dict().items()}
    with pytest.raises(ValueError, match="denoiser.net.chance.codebook expected shape"):
        initialize_from(more, saved)
    part = ("denoiser.net.chance.codebook", "denoiser.net.chance.usage", "denoiser.net.chance.prior")
    fresh = initialize_from(more, saved, part)
    assert fresh and all(k.startswith(part) for k in fresh)
    source = WorldModel.from_pretrained(saved).state_dict()
    for k, v in more.state_dict().items():
        assert torch.equal(v, before[k] if k.startswith(part) else source[k]), k
    typo = r"--fresh: no tensor of this model starts with 'denoiser.net.chance.codebok' \(some that do exist: \['den"
    with pytest.raises(ValueError, match=typo):
        initialize_from(more, saved, ("denoiser.net.chance.codebok",))


def test_training_only_named_parts_leaves_every_other_tensor_as_it_was(tmp_path, pong_episodes):
    model = new_model(pong_episodes, chance=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    part = "denoiser.net.chance.event"
    result = train(model, pong_episodes, tiny_cfg(steps=4, train_only=(part,)), tmp_path / "run", progress=False)
    for trained in (model, result.model):  # the weights and their EMA
        moved = [k for k, v in trained.state_dict().items() if not torch.equal(v, before[k])]
        assert any(k.endswith("weight") for k in moved)
        assert all(k.startswith(part) for k in moved)  # the event head's weights and its rate correction


def test_resuming_a_run_with_other_parts_to_train_is_refused(tmp_path, pong_episodes):
    part = ("denoiser.net.chance.event",)
    cfg = tiny_cfg(steps=2, train_only=part)
    train(new_model(pong_episodes, chance=4), pong_episodes, cfg, tmp_path, progress=False)
    for other in ((), ("denoiser.net.chance.event", "denoiser.net.chance.prior")):
        with pytest.raises(ValueError, match=r"trained \['denoiser.net.chance.event'\]; resuming it needs the same"):
            cfg = tiny_cfg(steps=4, train_only=other)
            train(new_model(pong_episodes, chance=4), pong_episodes, cfg, tmp_path, resume=True, progress=False)
    result = train(
        new_model(pong_episodes, chance=4), pong_episodes, tiny_cfg(steps=4, train_only=part), tmp_path,
        resume=True, progress=False,
    )  # fmt: skip
    assert result.steps == 4


def test_training_only_parts_that_are_absent_or_get_no_gradient_is_refused(tmp_path, pong_episodes):
    with pytest.raises(ValueError, match=r"no parameter of this model starts with 'denoiser.net.chance.evnt'"):
        train(
            new_model(pong_episodes, chance=4), pong_episodes, tiny_cfg(train_only=("denoiser.net.chance.evnt",)),
            tmp_path / "a", progress=False,
        )  # fmt: skip
    cfg = tiny_cfg(train_only=("denoiser.net.chance.event",), loss=LossConfig(chance_weight=0.0))
    with pytest.raises(ValueError, match="gives those parameters no gradient"):
        train(new_model(pong_episodes, chance=4), pong_episodes, cfg, tmp_path / "b", progress=False)
    with pytest.raises(ValueError, match="train_only: expected a tuple"):
        tiny_cfg(train_only="denoiser")

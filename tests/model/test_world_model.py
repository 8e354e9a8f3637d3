import json

import numpy as np
import pytest
import torch

from diffworld.diffusion.sampling import SamplerConfig
from diffworld.model.world_model import ModelConfig, WorldModel, read_config
from diffworld.rollout import rollout
from diffworld.spec import ActionSpace, WorldSpec
from tests.conftest import tiny_model


def test_checkpoint_round_trip(odd_model, tmp_path):
    odd_model.sampler = SamplerConfig(steps=2, sigma_ctx=0.03)
    odd_model.save_pretrained(tmp_path, extra={"note": "hello"})
    loaded = WorldModel.from_pretrained(tmp_path)
    assert loaded.spec == odd_model.spec and loaded.config == odd_model.config and loaded.sampler == odd_model.sampler
    for k, v in odd_model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    ctx, acts = torch.rand(1, 2, 3, 12, 20), torch.randint(0, 3, (1, 3))
    a = rollout(odd_model, ctx, acts, generator=torch.Generator().manual_seed(0))
    b = rollout(loaded, ctx, acts, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)
    assert json.loads((tmp_path / "config.json").read_text())["note"] == "hello"


def test_normalisation_round_trip():
    spec = WorldSpec("toy", "grid", (2, 8, 8), "real", ActionSpace())
    model = WorldModel(spec, ModelConfig.preset("tiny", patch=4), np.array([1.0, -2.0]), np.array([0.5, 3.0]))
    x = torch.randn(3, 4, 2, 8, 8)
    assert torch.allclose(model.denormalize(model.normalize(x)), x, atol=1e-5)
    z = model.normalize(torch.tensor([1.0, -2.0]).reshape(1, 2, 1, 1).expand(1, 2, 8, 8))
    assert torch.allclose(z, torch.zeros_like(z))


def test_missing_and_mismatched_checkpoints(odd_spec, tmp_path):
    odd_model = tiny_model(odd_spec)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        WorldModel.from_pretrained(tmp_path / "absent")
    odd_model.save_pretrained(tmp_path / "ok")
    (tmp_path / "ok/model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors is missing"):
        WorldModel.from_pretrained(tmp_path / "ok")
    # Weights of a wider model under this model's config.
    odd_model.save_pretrained(tmp_path / "mix")
    wide = tiny_model(odd_model.spec, width=64, heads=2)
    wide.save_pretrained(tmp_path / "wide")
    (tmp_path / "mix/model.safetensors").write_bytes((tmp_path / "wide/model.safetensors").read_bytes())
    with pytest.raises(ValueError, match="expected shape"):
        WorldModel.from_pretrained(tmp_path / "mix")
    # Weights of a model with a refiner head under a config without one.
    tiny_model(odd_spec, refine=2).save_pretrained(tmp_path / "refined")
    (tmp_path / "mix/model.safetensors").write_bytes((tmp_path / "refined/model.safetensors").read_bytes())
    with pytest.raises(ValueError, match="do not match the config: missing .*unexpected .*refiner"):
        WorldModel.from_pretrained(tmp_path / "mix")
    config = json.loads((tmp_path / "wide/config.json").read_text())
    config["format_version"] = 99
    (tmp_path / "wide/config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="format version 99"):
        WorldModel.from_pretrained(tmp_path / "wide")


def _nan_weight(model, path):
    next(model.parameters()).data.view(-1)[3] = float("nan")


def _sigma_data(value):
    def damage(model, path):
        if not (path / "config.json").exists():
            return
        config = json.loads((path / "config.json").read_text())
        config["model"]["sigma_data"] = value
        (path / "config.json").write_text(json.dumps(config))

    return damage


@pytest.mark.parametrize(
    "damage, match",
    [
        (_nan_weight, r"model.safetensors: expected finite weights, found nan in .*\[3\]"),
        (
            lambda m, p: m.std.view(-1)[1].fill_(0.0),
            r"model.safetensors: expected a normalisation std > 0 and finite .*found 0.0 in std\[1\]",
        ),
        (
            lambda m, p: m.std.view(-1)[0].fill_(float("inf")),
            r"model.safetensors: expected a normalisation std .*found inf in std\[0\]",
        ),
        (
            lambda m, p: m.mean.view(-1)[2].fill_(float("-inf")),
            r"model.safetensors: expected finite weights, found -inf in mean\[2\]",
        ),
        (_sigma_data(-1.0), r"config.json is invalid: sigma_data must be a finite number > 0, got -1.0"),
        (_sigma_data(0), r"config.json is invalid: sigma_data must be a finite number > 0, got 0"),
        (_sigma_data(float("nan")), r"config.json is invalid: sigma_data must be a finite number > 0, got nan"),
    ],
    ids=["nan-weight", "zero-std", "inf-std", "inf-mean", "negative-sigma-data", "zero-sigma-data", "nan-sigma-data"],
)
def test_a_checkpoint_that_would_dream_nonsense_is_refused_naming_file_and_field(odd_spec, tmp_path, damage, match):
    model = tiny_model(odd_spec)
    with torch.no_grad():
        damage(model, tmp_path)  # the weights (a config.json is damaged only once saved)
        model.save_pretrained(tmp_path)
        damage(model, tmp_path)
    with pytest.raises(ValueError, match=match) as err:
        WorldModel.from_pretrained(tmp_path)
    assert "\n" not in str(err.value) and str(tmp_path) in str(err.value)


def _config_edit(path, value):
    """A damage to a saved config.json: the field at `path` set to `value` (None: removed)."""

    def damage(config):
        where = config
        for key in path[:-1]:
            where = where[key]
        if value is None:
            del where[path[-1]]
        else:
            where[path[-1]] = value

    return damage


@pytest.mark.parametrize(
    "path, value, match",
    [
        (
            ("model", "dit", "heads"),
            0,
            r"config.json is invalid: dit heads: expected an integer in \[1, 1024\], found 0",
        ),
        (("model", "dit", "width"), "32", r"config.json is invalid: dit width: expected an integer .*found '32'"),
        (("model", "dit", "depth"), 2.5, r"config.json is invalid: dit depth: expected an integer .*found 2.5"),
        (("model", "dit"), None, r"config.json is invalid: expected a field 'dit', found none"),
        (("model",), [], r"config.json is invalid: expected model to be a JSON object, found \[\]"),
        (("model", "change_std"), "x", r"config.json is invalid: change_std: expected a finite number >= 0, found 'x'"),
        (("spec",), "pong", r"config.json is invalid: expected spec to be a JSON object, found 'pong'"),
        (("spec", "frame_shape"), 5, r"config.json is invalid: spec frame_shape: expected a list, found 5"),
        (
            ("spec", "frame_shape"),
            [3, "12", 20],
            r"config.json is invalid: frame_shape: expected positive integers, found \[3, '12', 20\]",
        ),
        (("spec", "name"), 5, r"config.json is invalid: spec name: expected a string, found 5"),
        (
            ("spec", "step_duration"),
            float("nan"),
            r"config.json is invalid: step_duration: expected a finite number > 0, found nan",
        ),
        (("sampler", "steps"), "3", r"config.json is invalid: sampler steps: expected an integer >= 1, found '3'"),
        (("data",), ["x"], r"config.json is invalid: expected data to be a JSON object"),
        (("data", "train_seeds"), [0, "9"], r"config.json is invalid: expected data.train_seeds to be \[first, last\]"),
    ],
    ids=[
        "zero-heads",
        "str-width",
        "float-depth",
        "no-dit",
        "model-list",
        "str-change-std",
        "spec-str",
        "int-frame-shape",
        "str-in-frame-shape",
        "int-name",
        "nan-step",
        "str-sampler-steps",
        "data-list",
        "str-train-seed",
    ],  # fmt: skip
)
def test_a_config_json_of_wrong_types_is_refused_in_one_line(odd_spec, tmp_path, path, value, match):
    tiny_model(odd_spec).save_pretrained(tmp_path, extra={"data": {"train_seeds": [0, 1]}})
    config = json.loads((tmp_path / "config.json").read_text())
    _config_edit(path, value)(config)
    (tmp_path / "config.json").write_text(json.dumps(config))
    for read in (WorldModel.from_pretrained, read_config):  # every reader of the file, not the model alone
        with pytest.raises(ValueError, match=match) as err:
            read(tmp_path)
        assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "path, value, match",
    [
        (
            ("model", "dit", "depth"),
            1000,
            r"model.safetensors do not match the config: expected dit depth 1000, found 2 blocks",
        ),
        (("model", "dit", "width"), 65536, r"checkpoint tensor .*: expected shape \[65536, .*\], found \[32, .*\]"),
        (
            ("model", "dit", "mlp_ratio"),
            64.0,
            r"checkpoint tensor .*mlp.0.weight: expected shape \[2048, 32\], found \[128, 32\]",
        ),
        (
            ("spec", "frame_shape"),
            [3, 65536, 65536],
            r"config.json is invalid: 65536x65536 frames in patches of 4: expected at most 8192 tokens",
        ),
        (
            ("spec", "frame_shape"),
            [7, 12, 20],
            r"checkpoint tensor mean: expected shape \[7, 1, 1\], found \[3, 1, 1\]",
        ),
    ],
    ids=["depth", "width", "mlp", "frame", "channels"],
)
def test_config_sizes_are_checked_against_the_weights_before_anything_is_allocated(
    odd_spec, tmp_path, path, value, match, monkeypatch
):
    """A config.json asking for a huge network is refused from the weights file's header, before any
    tensor of that size exists: every model built during the load is on the meta device."""
    tiny_model(odd_spec).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    _config_edit(path, value)(config)
    (tmp_path / "config.json").write_text(json.dumps(config))
    built = []
    real_init = WorldModel.__init__

    def spy(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        built.append(self.mean.device.type)

    monkeypatch.setattr(WorldModel, "__init__", spy)
    with pytest.raises(ValueError, match=match) as err:
        WorldModel.from_pretrained(tmp_path)
    assert "\n" not in str(err.value) and set(built) <= {"meta"}, built


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown model preset 'huge'"):
        ModelConfig.preset("huge")


def test_categorical_spec_projection_and_checks(tmp_path):
    spec = WorldSpec("states", "graph", (4, 3), "categorical", value_range=(0.0, 1.0), edges=((0, 1), (1, 2), (2, 3)))
    assert spec.channel_axis == -1 and WorldSpec("g", "grid", (3, 4, 4), "categorical").channel_axis == -3
    model = WorldModel(spec, ModelConfig.preset("tiny"), np.full(3, 0.3), np.full(3, 0.4))
    soft = torch.tensor([[0.6, 0.7, -0.1], [0.2, 0.1, 0.15], [0.0, 0.0, 1.2], [0.4, 0.3, 0.3]])
    assert torch.equal(model.project(soft), torch.eye(3)[[1, 0, 2, 0]])  # one state per node, never two or none
    with pytest.raises(ValueError, match="categorical world needs >= 2 channels"):
        WorldSpec("one", "graph", (4, 1), "categorical")
    with pytest.raises(ValueError, match="value_kind must be binary, categorical, bounded or real"):
        WorldSpec("bad", "graph", (4, 3), "onehot")
    model.save_pretrained(tmp_path)
    loaded = WorldModel.from_pretrained(tmp_path)
    assert loaded.spec == spec and loaded.mean.shape == (3,)

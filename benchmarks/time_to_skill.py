"""Time to skill: minutes of training on this machine until the pong model first reaches state
skill vs oracle >= 0.7 at every horizon 1..16.

    python benchmarks/time_to_skill.py --out runs/time-to-skill           # the default recipe
    python benchmarks/time_to_skill.py --out runs/tts-s1 --seed 1         # another training seed
    python benchmarks/time_to_skill.py --out runs/tts-lr2 --lr 2e-3       # twice the peak learning rate
    python benchmarks/time_to_skill.py --out runs/tts-old --loss '{"p_mean": -0.4, "p_std": 1.2}'
    python benchmarks/time_to_skill.py --out runs/tts-gpu --device cuda
    python benchmarks/time_to_skill.py --out runs/tts-compiled --compile  # the step through torch.compile

Trains the previous reference model's recipe (`base` with a linear head, batch 16, a 9,500-step
schedule, 400 episodes; the shipped v4 adds a refiner head and runs 8,000 steps, MODEL.md) with
pong's recommended loss — target noise levels ln σ ~ N(1.0, 0.8²); the `--loss` override above
restores the generic levels the previous reference used — and every `--every` steps scores the
EMA weights on validation
cases (seeds 1,500,000+, neither trained on nor the test seeds `diffworld eval` reports):
state CRPS of `--cases` × `--members` dreams per horizon with pong's sampler (SAMPLER_DEFAULTS), against
persistence and the oracle (the true game branched `--members` ways) on the same cases. The run
stops at the first check where skill vs oracle >= `--target` at every horizon. Training time
excludes the checks (they are timed and printed apart); every check is appended to
`OUT/time_to_skill.jsonl`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from common import machine

from diffworld.data.collect import CollectConfig
from diffworld.evaluate.forecasts import make_cases, model_forecast, oracle_forecast, persistence_forecast
from diffworld.evaluate.metrics import crps, decoded_state, skill_vs_reference
from diffworld.model.world_model import ModelConfig, WorldModel
from diffworld.recipes import recommended_loss
from diffworld.splits import GAME_VALIDATION_SEED_BASE
from diffworld.train import StopTraining, TrainConfig, build_model, train
from diffworld.worlds import collect_episodes, default_policy, make_world

WORLD = "pong"


class SkillCheck:
    """The validation hook: state skill vs oracle per horizon of the EMA model on fixed validation cases."""

    def __init__(self, cases: int, members: int, horizon: int, target: float, context: int, log_path: Path) -> None:
        make = lambda: make_world(WORLD)  # noqa: E731
        self.world = make()
        seeds = [GAME_VALIDATION_SEED_BASE + i for i in range(max(1, cases // 2))]
        self.cases = make_cases(make, seeds, default_policy(WORLD), cases, context, horizon, np.random.default_rng(0))
        self.truth = self.world.decode(self.cases.truth)[0]
        self.persistence = self.state_crps(persistence_forecast(self.cases))
        self.oracle = self.state_crps(oracle_forecast(make, self.cases, members))
        self.members, self.target, self.log_path = members, target, log_path
        self.started = time.perf_counter()
        self.check_seconds = 0.0

    def state_crps(self, forecast: np.ndarray) -> np.ndarray:
        return crps(decoded_state(self.world, forecast, self.truth)[0], self.truth)

    def __call__(self, model: WorldModel) -> float:
        t0 = time.perf_counter()
        trained = t0 - self.started - self.check_seconds
        dream = model_forecast(model, self.cases.context, self.cases.actions, self.members, self.cases.context_actions)
        skill = skill_vs_reference(self.state_crps(dream), self.persistence, self.oracle)
        self.check_seconds += time.perf_counter() - t0
        record = {
            "train_minutes": trained / 60,
            "min_skill": float(skill.min()),
            "skill": skill.round(3).tolist(),
            "check_seconds": self.check_seconds,
        }
        with self.log_path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        print(
            f"{trained / 60:6.1f} min of training: skill min {skill.min():.3f} "
            f"(h=1 {skill[0]:.2f}, h=8 {skill[7]:.2f}, h=16 {skill[-1]:.2f})",
            flush=True,
        )
        if skill.min() >= self.target:
            print(f"time to skill >= {self.target} at every horizon: {trained / 60:.1f} minutes", flush=True)
            raise StopTraining(-float(skill.min()))
        return -float(skill.min())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--preset", default="base")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--steps", type=int, default=9500, help="length of the learning-rate schedule, and the most steps run"
    )
    parser.add_argument("--episodes", type=int, default=400)
    parser.add_argument("--lr", type=float, default=TrainConfig.lr, help="peak learning rate")
    parser.add_argument(
        "--seed", type=int, default=TrainConfig.seed, help="training seed (the validation cases stay fixed)"
    )
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the training step (TrainConfig.compile; compiling counts as training time)",
    )
    parser.add_argument("--every", type=int, default=500, help="steps between checks")
    parser.add_argument("--cases", type=int, default=32)
    parser.add_argument("--members", type=int, default=16)
    parser.add_argument("--target", type=float, default=0.7)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--loss", default="{}", help="JSON overrides of pong's recommended loss, e.g. '{\"self_context\": 0.25}'"
    )
    args = parser.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists; choose a new --out")
    try:
        loss = recommended_loss(WORLD, **json.loads(args.loss))
    except (json.JSONDecodeError, TypeError, ValueError) as e:
        raise SystemExit(f"--loss: expected a JSON object of loss settings, got {args.loss!r} ({e})") from None
    print(machine(args.device))
    make = lambda: make_world(WORLD)  # noqa: E731
    seeds = CollectConfig(source=WORLD, episodes=args.episodes, policy="default").seeds
    episodes = collect_episodes(make, seeds, default_policy(WORLD), CollectConfig.max_steps)
    cfg = TrainConfig(
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed, precision=args.precision, loss=loss,
        device=args.device, compile=args.compile,
    )  # fmt: skip
    model = build_model(make().spec, episodes, ModelConfig.preset(args.preset), seed=args.seed)
    args.out.mkdir(parents=True)
    check = SkillCheck(args.cases, args.members, 16, args.target, model.frames - 1, args.out / "time_to_skill.jsonl")
    print(
        f"{args.preset} ({model.num_parameters() / 1e6:.2f}M), batch {args.batch_size}, lr {args.lr:g}, "
        f"seed {args.seed}, {args.precision}{', compiled' if args.compile else ''}, schedule of {args.steps} "
        f"steps; a check every {args.every} steps on {args.cases} validation cases × {args.members} members"
    )
    print(f"loss {loss}\nsampler {model.sampler}")
    check.started = time.perf_counter()
    result = train(model, episodes, cfg, args.out, progress=False, validate=check, validate_every=args.every)
    print(
        f"stopped at step {result.steps}: {(result.seconds - check.check_seconds) / 60:.1f} minutes of training, "
        f"{check.check_seconds / 60:.1f} of checks"
    )


if __name__ == "__main__":
    main()

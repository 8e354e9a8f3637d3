"""Train a tiny model on an episode store; run by the distributed and crash tests as a subprocess.

    python train_tiny.py STORE OUT [--kill-at-step N] [--kill-in-swap N] [--resume]
    torchrun --nproc_per_node=2 train_tiny.py STORE OUT

Every rank writes its raw parameters to OUT/params_rank<r>.safetensors at the end, so a test can
compare ranks. --kill-at-step SIGKILLs the process right after optimizer step N; --kill-in-swap
SIGKILLs it in the middle of the N-th checkpoint swap (new checkpoint complete, old one moved away).
"""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path

from safetensors.torch import save_file

from diffworld.data.store import EpisodeStore
from diffworld.model.world_model import ModelConfig
from diffworld.train import TrainConfig, build_model, train


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("store")
    ap.add_argument("out")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--kill-at-step", type=int, default=0)
    ap.add_argument("--kill-in-swap", type=int, default=0)
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args()

    store = EpisodeStore.open(args.store)
    model = build_model(store.spec, store, ModelConfig.preset("tiny"), seed=0)
    cfg = TrainConfig(steps=args.steps, batch_size=4, lr=2e-3, warmup=2, log_every=1, checkpoint_every=3, seed=0)

    def kill(step: int, loss: float) -> None:
        if step == args.kill_at_step:
            os.kill(os.getpid(), signal.SIGKILL)

    if args.kill_in_swap:
        swaps = {"n": 0}
        rename = Path.rename

        def dying_rename(self: Path, target: Path) -> Path:
            if str(target).endswith("checkpoint.old"):
                swaps["n"] += 1
                if swaps["n"] == args.kill_in_swap:
                    os.kill(os.getpid(), signal.SIGKILL)
            return rename(self, target)

        Path.rename = dying_rename  # type: ignore[method-assign]

    train(model, store, cfg, args.out, resume=args.resume, progress=False, on_step=kill)
    rank = int(os.environ.get("RANK", "0"))
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(Path(args.out) / f"params_rank{rank}.safetensors"))


if __name__ == "__main__":
    main()

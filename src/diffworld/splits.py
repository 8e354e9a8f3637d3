"""Every split of the data, named once: which seeds (simulators) or dates (real series) serve what.

A simulator's episode is fixed by its seed, so a split is a range of seeds. Training takes seeds
below `HELD_OUT_SEED_BASE`; every reported score comes from seeds at or above it; the ranges
used to choose settings (validation) and to score agents lie apart from both. Real series
split by date only.

| split                               | seeds or dates                         |
|-------------------------------------|----------------------------------------|
| training                            | 0 .. 999,999                           |
| held out (every reported score)     | 1,000,000+                             |
| games, epidemics: validation; heads | 1,500,000+                             |
| games: agents' scoring, serve probe | 1,600,000+                             |
| games: dream GIFs                   | 1,900,000+                             |
| rollout speed benchmark             | 2,000,000                              |
| forecasting: validation start dates | 200,000+ (free runs from 700,000)      |
| markets                             | train < 2013, validate 2013–14, test 2015–18 |
"""

from __future__ import annotations

# --- simulators: seeds -------------------------------------------------------------------------

#: First held-out seed: every reported score (`diffworld eval`, the demos) starts here; training
#: episodes take the seeds below it (a collection's seeds are checked against it).
HELD_OUT_SEED_BASE = 1_000_000
#: Games' validation set, as an offset of the held-out seeds (`diffworld eval --seed-offset 500000`).
GAME_VALIDATION_OFFSET = 500_000
#: Games' validation seeds: choosing sampler settings; neither trained on nor reported.
GAME_VALIDATION_SEED_BASE = HELD_OUT_SEED_BASE + GAME_VALIDATION_OFFSET
#: Held-out episodes reward and episode-end heads are scored on (`diffworld heads`).
HEADS_HELD_OUT_SEED_BASE = HELD_OUT_SEED_BASE + 500_000
#: Held-out real episodes every agent and the random policy play, in order (`diffworld agent`).
AGENT_SEED_BASE = HELD_OUT_SEED_BASE + 600_000
#: Episodes whose serves the serve probe draws (benchmarks/serve_probe.py).
SERVE_PROBE_SEED_BASE = 1_600_000
#: Held-out episodes a dream GIF shows (`diffworld rollout`, the demo's rollout.gif): 100 per GIF seed.
GIF_SEED_BASE = HELD_OUT_SEED_BASE + 900_000
#: Seeds a GIF may try per GIF seed (GIF seed s uses GIF_SEED_BASE + s·GIF_SEEDS onwards).
GIF_SEEDS = 100
#: The pong episode the rollout-speed benchmark reads its contexts from (benchmarks/rollout_cache.py).
BENCHMARK_EPISODE_SEED = 2_000_000

#: Forecasting (Lorenz-96, fields): first seed of the validation start dates (`diffworld eval
#: --validation`): settings are chosen on these, the held-out start dates only score the choice.
VALIDATION_START_SEED_BASE = 200_000
#: Forecasting: a forecast's free runs start from seeds this far past its start dates' seeds.
FREE_RUN_SEED_OFFSET = 500_000
#: Forecasting: the validation trajectories early stopping runs freely from (the validation start
#: dates' free runs): neither trained on nor scored.
VALIDATION_SEED_BASE = VALIDATION_START_SEED_BASE + FREE_RUN_SEED_OFFSET
#: Fields: the probe's start dates, past the validation start dates (benchmarks/fields_probe.py).
FIELDS_PROBE_SEED_OFFSET = 50
#: Fields: the event study's start dates, past the validation start dates (benchmarks/fields_events.py).
FIELDS_EVENTS_SEED_OFFSET = 300

# --- real series: dates ------------------------------------------------------------------------

#: Markets: the model trains on the days before this date …
MARKET_VALIDATION_START = "2013-01-01"
#: … is early-stopped on [MARKET_VALIDATION_START, MARKET_TRAIN_END); the peers fit on every day before it …
MARKET_TRAIN_END = "2015-01-01"
#: … and every score is on the test days [MARKET_TRAIN_END, MARKET_TEST_END).
MARKET_TEST_END = "2019-01-01"

__all__ = [
    "AGENT_SEED_BASE",
    "BENCHMARK_EPISODE_SEED",
    "FIELDS_EVENTS_SEED_OFFSET",
    "FIELDS_PROBE_SEED_OFFSET",
    "FREE_RUN_SEED_OFFSET",
    "GAME_VALIDATION_OFFSET",
    "GAME_VALIDATION_SEED_BASE",
    "GIF_SEEDS",
    "GIF_SEED_BASE",
    "HEADS_HELD_OUT_SEED_BASE",
    "HELD_OUT_SEED_BASE",
    "MARKET_TEST_END",
    "MARKET_TRAIN_END",
    "MARKET_VALIDATION_START",
    "SERVE_PROBE_SEED_BASE",
    "VALIDATION_SEED_BASE",
    "VALIDATION_START_SEED_BASE",
]

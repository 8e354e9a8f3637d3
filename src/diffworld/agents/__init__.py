"""Agents in a world model: the dream as a Gymnasium environment, the heads that give it rewards and
episode ends, and a compact PPO that learns in it.

- `envs`: `DreamEnv` / `DreamVectorEnv` (a trained model stepped as an environment) and
  `WorldVectorEnv` (the true world behind the same interface);
- `heads`: reward and episode-end heads read off every dreamed transition;
- `ppo`: the PPO agent that trains on either.
"""

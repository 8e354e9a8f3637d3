"""Episodes, stores and training windows."""

from diffworld.data.episodes import Episode, frame_stats
from diffworld.data.store import EpisodeStore, StoreError

__all__ = ["Episode", "EpisodeStore", "StoreError", "frame_stats"]

"""Episodes, stores and training windows."""

from diffworld.data.episodes import Episode, frame_stats

__all__ = ["Episode", "frame_stats"]

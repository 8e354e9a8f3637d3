"""diffworld: diffusion-transformer world models — learn how a world evolves, then dream it."""

from diffworld.diffusion.sampling import SamplerConfig
from diffworld.model.world_model import ModelConfig, WorldModel
from diffworld.rollout import rollout
from diffworld.spec import ActionSpace, WorldSpec

__version__ = "0.1.0"

__all__ = ["ActionSpace", "ModelConfig", "SamplerConfig", "WorldModel", "WorldSpec", "rollout", "__version__"]

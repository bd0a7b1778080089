"""Models: configs (no torch needed) and, in submodules, the PyTorch reference model and checkpoint loaders."""
from bluelm_v.models.config import DeployConfig, LLMConfig, ModelConfig, ProjectorConfig, VisionConfig, load_model_config

__all__ = ["DeployConfig", "LLMConfig", "ModelConfig", "ProjectorConfig", "VisionConfig", "load_model_config"]

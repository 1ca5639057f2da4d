"""Models: configs, the pure-function decoder, checkpoint conversion, tokenizers and named models."""

from polar_jax.models.config import ModelConfig, RopeScaling, UnsupportedModelError
from polar_jax.models.convert import convert_hf_snapshot, convert_tensors, expected_keys
from polar_jax.models.registry import EMBEDDED_MODELS, Model, list_models, load_model
from polar_jax.models.safetensors_io import CheckpointFormatError
from polar_jax.models.tokenizer import Tokenizer
from polar_jax.models import transformer

__all__ = [
    "CheckpointFormatError", "EMBEDDED_MODELS", "Model", "ModelConfig", "RopeScaling", "Tokenizer",
    "UnsupportedModelError", "convert_hf_snapshot", "convert_tensors", "expected_keys", "list_models",
    "load_model", "transformer",
]

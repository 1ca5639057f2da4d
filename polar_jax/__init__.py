"""polar_jax: Program-of-Layers (PoLar) for pretrained LLMs in JAX."""

__version__ = "0.1.0"

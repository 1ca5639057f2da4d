"""The PoLar predictor: frozen question encoder -> per-layer segment boundaries and skip/keep/repeat ops.

Public API (the trainer is `polar_jax.train.train_predictor`):
- encoders: `QuestionEncoder` (protocol), `MiniLMEncoder`, `TokenEmbeddingEncoder`, `HiddenStateEncoder`
  (the Qwen3-Embedding hook), `CachedEncoder`, `precompute_features`, `QuestionFeatures`, `hf_hidden_state_encoder` (a local
  HF snapshot such as Qwen3-Embedding-0.6B);
- the network: `PredictorConfig`, `PolarPredictor`, `init_params`, `count_params`;
- supervision and targets: `load_supervision`, `supervision_from_search`, `SupervisionRecord`, `SupervisionError`,
  `release_splits`, `TargetOptions`, `build_examples`, `program_targets`, `polar_loss`;
- decoding and inference: `DecodeOptions`, `decode_programs`, `Decoded`, `DecodedProgram`,
  `ProgramPredictor`, `load_predictor`, `CheckpointMismatchError`.

The names load on first use (PEP 562), so importing a light submodule (`predictor.decode`,
`predictor.targets`, `predictor.supervision`: numpy only) does not load flax or jax.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "CheckpointMismatchError": "polar_jax.predictor.checkpoint",
    "load_predictor": "polar_jax.predictor.checkpoint",
    "Decoded": "polar_jax.predictor.decode",
    "DecodedProgram": "polar_jax.predictor.decode",
    "DecodeOptions": "polar_jax.predictor.decode",
    "decode_programs": "polar_jax.predictor.decode",
    "CachedEncoder": "polar_jax.predictor.encoder",
    "HiddenStateEncoder": "polar_jax.predictor.encoder",
    "MiniLMEncoder": "polar_jax.predictor.encoder",
    "QuestionEncoder": "polar_jax.predictor.encoder",
    "QuestionFeatures": "polar_jax.predictor.encoder",
    "TokenEmbeddingEncoder": "polar_jax.predictor.encoder",
    "hf_hidden_state_encoder": "polar_jax.predictor.encoder",
    "precompute_features": "polar_jax.predictor.encoder",
    "polar_loss": "polar_jax.predictor.loss",
    "PolarPredictor": "polar_jax.predictor.model",
    "PredictorConfig": "polar_jax.predictor.model",
    "count_params": "polar_jax.predictor.model",
    "init_params": "polar_jax.predictor.model",
    "ProgramPredictor": "polar_jax.predictor.predict",
    "Supervision": "polar_jax.predictor.supervision",
    "SupervisionError": "polar_jax.predictor.supervision",
    "SupervisionRecord": "polar_jax.predictor.supervision",
    "load_supervision": "polar_jax.predictor.supervision",
    "release_splits": "polar_jax.predictor.supervision",
    "supervision_from_search": "polar_jax.predictor.supervision",
    "OutsideSpaceWarning": "polar_jax.predictor.targets",
    "TargetOptions": "polar_jax.predictor.targets",
    "build_examples": "polar_jax.predictor.targets",
    "program_targets": "polar_jax.predictor.targets",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
  if name in _EXPORTS:
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
  raise AttributeError(f"module 'polar_jax.predictor' has no attribute {name!r}")


def __dir__():
  return sorted(set(globals()) | set(_EXPORTS))

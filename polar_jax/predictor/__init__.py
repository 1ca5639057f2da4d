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
"""

from polar_jax.predictor.checkpoint import CheckpointMismatchError
from polar_jax.predictor.checkpoint import load_predictor
from polar_jax.predictor.decode import Decoded
from polar_jax.predictor.decode import DecodedProgram
from polar_jax.predictor.decode import DecodeOptions
from polar_jax.predictor.decode import decode_programs
from polar_jax.predictor.encoder import CachedEncoder
from polar_jax.predictor.encoder import HiddenStateEncoder
from polar_jax.predictor.encoder import MiniLMEncoder
from polar_jax.predictor.encoder import QuestionEncoder
from polar_jax.predictor.encoder import QuestionFeatures
from polar_jax.predictor.encoder import TokenEmbeddingEncoder
from polar_jax.predictor.encoder import hf_hidden_state_encoder
from polar_jax.predictor.encoder import precompute_features
from polar_jax.predictor.loss import polar_loss
from polar_jax.predictor.model import PolarPredictor
from polar_jax.predictor.model import PredictorConfig
from polar_jax.predictor.model import count_params
from polar_jax.predictor.model import init_params
from polar_jax.predictor.predict import ProgramPredictor
from polar_jax.predictor.supervision import Supervision
from polar_jax.predictor.supervision import SupervisionError
from polar_jax.predictor.supervision import SupervisionRecord
from polar_jax.predictor.supervision import load_supervision
from polar_jax.predictor.supervision import release_splits
from polar_jax.predictor.supervision import supervision_from_search
from polar_jax.predictor.targets import OutsideSpaceWarning
from polar_jax.predictor.targets import TargetOptions
from polar_jax.predictor.targets import build_examples
from polar_jax.predictor.targets import program_targets

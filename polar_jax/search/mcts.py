"""The batched, resumable, sharded search driver: many questions at once, one scorer call per round.

Each round, every active question selects up to `leaves_per_round` leaves (virtual loss, `tree.py`); the
programs not yet scored for that question are collected from all active questions and handed to the scorer
in one call (the scorer packs them into device batches, `batching.py`); rewards are backed up, finished
questions are written, and new questions take their place so that the device stays full.

Reproducibility: a question's generator derives from (seed, question id), its tree sees only its own
rewards, and every question takes the same number of rounds, so its record does not depend on which other
questions share its rounds, on the shard, or on restarts. Records are written in input order. A restarted
run (same output path, same config) skips the questions already in the file and produces the same file as
an uninterrupted run, up to the `seconds` field, given the same rewards: with an LLM scorer, batch shapes can
change float results, so each record's `config` also says how it was batched (`records.DRIVER_KEYS`:
max_batch, max_active, per_question; `search.scoring` says when that makes a resumed run bit-identical). A
restart with other batching is allowed and logged; one with another tree config is refused.

Seconds: a record's `seconds` is its share of the wall time of the rounds it took part in. Each round's time
(selection, scoring, backup) is split over the round's questions in proportion to the layer executions their
pairs cost (evenly among them when no pair was scored), so the records of a run sum to its search time,
however many questions shared each round.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import logging
import os
import time
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from polar_jax.programs import Program
from polar_jax.records import DRIVER_KEYS, VALID_THRESHOLD, ProgramEntry, SearchRecord
from polar_jax.search import records as records_lib
from polar_jax.search.release import ReleaseTree
from polar_jax.search.rewards import ScoredProgram, Scorer, scorer_batching
from polar_jax.search.tree import SearchConfig, SearchTree

log = logging.getLogger(__name__)

def question_rng(seed: int, question_id: str) -> np.random.Generator:
  """The question's own generator, from (seed, question id): independent of order, shard and restarts."""
  digest = hashlib.sha256(str(question_id).encode("utf-8")).digest()
  words = np.frombuffer(digest[:16], dtype=np.uint32).tolist()
  return np.random.default_rng(np.random.SeedSequence([int(seed), *words]))


def new_tree(depth: int, config: SearchConfig, question_id: str) -> SearchTree | ReleaseTree:
  """The question's tree under `config.protocol`: CoLa's (seeded from (seed, question id)) or the release's
  (seeded from `seed` alone, as the release re-seeds every question's search the same way)."""
  if config.protocol == "polar_release":
    return ReleaseTree(depth, config)
  return SearchTree(depth, config, question_rng(config.seed, question_id))


def example_field(example: Any, name: str, default: Any = None) -> Any:
  """Reads a field from an Example-like object or a mapping."""
  if isinstance(example, Mapping):
    return example.get(name, default)
  return getattr(example, name, default)


class QuestionSearch:
  """The search state of one question: its tree, memo and pending evaluations."""

  def __init__(self, index: int, example: Any, depth: int, config: SearchConfig, order: int = 0,
               driver: Mapping[str, Any] | None = None):
    self.index = index
    self.order = order  # Position in the run's queue; records are emitted in this order.
    self.example = example
    self.id = str(example_field(example, "id"))
    self.depth = depth
    self.config = config
    self.tree = new_tree(depth, config, self.id)
    self.memo: dict[tuple[int, ...], ScoredProgram] = {}
    self.pending: dict[tuple[int, ...], list[list[int]]] = {}
    self.first: dict[tuple[int, ...], int] = {}  # The simulation (1-based; 0: before any) that first reached it.
    self.driver = dict(driver or {})  # How the driver batched: recorded next to the tree config.
    self.seconds = 0.0  # This question's share of the rounds' wall time so far.

  @property
  def simulations(self) -> int:
    return self.tree.simulations

  @property
  def done(self) -> bool:
    return self.simulations >= self.config.num_simulations and not self.pending

  def select(self, limit: int) -> list[tuple[int, ...]]:
    """Runs up to `limit` selections (the release's first one scores the full program and is no simulation);
    returns the programs that need scoring."""
    new = []
    for _ in range(limit):
      if self.simulations >= self.config.num_simulations:
        break
      path = self.tree.select()
      program = self.tree.programs[path[-1]]
      if program in self.memo:  # A memo hit: a simulation whose evaluation is free.
        self.tree.backup(path, self.memo[program].reward)
      elif program in self.pending:
        self.pending[program].append(path)
      else:
        self.pending[program] = [path]
        self.first.setdefault(program, self.simulations)
        new.append(program)
    return new

  def receive(self, program: tuple[int, ...], scored: ScoredProgram) -> None:
    self.memo[program] = scored
    for path in self.pending.pop(program):
      self.tree.backup(path, scored.reward)

  def record(self) -> SearchRecord:
    visits = self.tree.program_visits()
    full = tuple(range(self.depth))
    valid, invalid = [], []
    for program in sorted(self.memo, key=lambda p: (len(p), p)):
      scored = self.memo[program]
      extra = {} if scored.gold_logprob is None else {"gold_logprob": round(float(scored.gold_logprob), 4),
                                                       "decided_by": scored.decided_by}
      if program in self.first:
        extra["simulation"] = int(self.first[program])
      entry = ProgramEntry(program, visits.get(program, 0), scored.answer, extra)
      (valid if scored.reward > VALID_THRESHOLD else invalid).append(entry)
    ex = self.example
    return SearchRecord(
        id=self.id,
        question=str(example_field(ex, "question", "")),
        gold=_json_scalar(example_field(ex, "answer")),
        level=_json_scalar(example_field(ex, "level")),
        subject=_json_scalar(example_field(ex, "subject")),
        depth=self.depth,
        initial_score=float(self.memo[full].reward),
        initial_answer=self.memo[full].answer,
        valid=tuple(valid),
        invalid=tuple(invalid),
        simulations=self.simulations,
        evaluations=len(self.memo),
        layers=int(sum(s.layers for s in self.memo.values())),
        seconds=round(float(self.seconds), 3),
        seed=int(self.config.seed),
        config={**self.config.to_json(), **self.driver},
    )


def _normalized(config: Any) -> Any:
  """A record's tree config with the fields it predates at their defaults (older records lack `protocol`), without
  the driver's batching fields."""
  if not isinstance(config, Mapping):
    return config
  try:
    return SearchConfig.from_json({k: v for k, v in config.items() if k not in DRIVER_KEYS}).to_json()
  except (TypeError, ValueError):
    return config


def _driver_config(scorer: Scorer, max_active: int) -> dict[str, Any]:
  """How this run batches, in `DRIVER_KEYS` order: what each of its records' config adds to the tree's."""
  settings = {**scorer_batching(scorer), "max_active": int(max_active)}
  return {k: settings[k] for k in DRIVER_KEYS}


def _driver(config: Any) -> dict[str, Any]:
  """A record's batching fields (missing in records written before they were recorded: not compared)."""
  return {k: config[k] for k in DRIVER_KEYS if isinstance(config, Mapping) and k in config}


def _json_scalar(value: Any) -> Any:
  if value is None or isinstance(value, (str, bool, int, float)):
    return value
  if isinstance(value, np.generic):
    return value.item()
  return str(value)


def _score_round(scorer: Scorer, pairs: list[tuple[QuestionSearch, tuple[int, ...]]], depth: int,
                 max_len: int) -> dict[int, float]:
  """Scores the round's pairs and backs them up; returns the layer executions per question order."""
  cost: dict[int, float] = collections.defaultdict(float)
  if not pairs:
    return cost
  results = scorer.score([(q.index, Program(p, depth, max_len)) for q, p in pairs])
  if len(results) != len(pairs):
    raise ValueError(f"The scorer returned {len(results)} results for {len(pairs)} (question, program) pairs; "
                     "it must return exactly one ScoredProgram per pair, in order.")
  for (q, program), scored in zip(pairs, results):
    if not isinstance(scored, ScoredProgram):
      raise TypeError(f"The scorer must return ScoredProgram objects, got {type(scored).__name__}.")
    q.receive(program, scored)
    cost[q.order] += max(float(scored.layers), 0.0) or 1e-9  # A pair that reports no layers still counts.
  return cost


def _share_round(active: Sequence[QuestionSearch], cost: Mapping[int, float], seconds: float) -> None:
  """Adds each active question's share of a round's wall time (by layer executions; evenly if none)."""
  total = sum(cost.values())
  for q in active:
    q.seconds += seconds * (cost.get(q.order, 0.0) / total if total > 0 else 1.0 / len(active))


def search_stream(examples: Sequence[Any], indices: Sequence[int], scorer: Scorer, config: SearchConfig,
                  *, max_active: int = 32, on_round: Callable[[int], None] | None = None
                  ) -> Iterator[SearchRecord]:
  """Searches `examples[i]` for i in `indices`, yielding one record per question, in `indices` order.

  Up to `max_active` questions advance together; scorer question indexes are indexes into `examples`. Each
  record's config is `config.to_json()` plus max_active and the scorer's batching (`scorer_batching`).
  `on_round(simulations)`: called after every round with the simulations this call has completed so far (of
  `len(indices) * config.num_simulations`): progress that moves every round, while questions finish in waves.
  """
  if max_active < 1:
    raise ValueError(f"max_active must be at least 1, got {max_active}.")
  depth = int(scorer.depth)
  max_len = config.resolved_max_len(depth)
  driver = _driver_config(scorer, max_active)
  queue = list(indices)
  active: list[QuestionSearch] = []
  finished: dict[int, SearchRecord] = {}
  started = 0
  emitted = 0
  finished_simulations = 0
  while emitted < len(queue):
    while len(active) < max_active and started < len(queue):
      i = queue[started]
      active.append(QuestionSearch(i, examples[i], depth, config, order=started, driver=driver))
      started += 1
    round_start = time.perf_counter()
    pairs = [(q, p) for q in active for p in q.select(config.leaves_per_round)]
    cost = _score_round(scorer, pairs, depth, max_len)
    _share_round(active, cost, time.perf_counter() - round_start)
    for q in [q for q in active if q.done]:
      active.remove(q)
      finished[q.order] = q.record()
      finished_simulations += q.simulations
    if on_round is not None:
      on_round(finished_simulations + sum(q.simulations for q in active))  # every pair was scored
    while emitted in finished:
      yield finished.pop(emitted)
      emitted += 1


def search(examples: Sequence[Any], scorer: Scorer, config: SearchConfig = SearchConfig(), *,
           max_active: int = 32) -> list[SearchRecord]:
  """In-memory search of every example (no file, no sharding); returns the records in input order."""
  return list(search_stream(examples, range(len(examples)), scorer, config, max_active=max_active))


@dataclasses.dataclass(frozen=True)
class SearchRun:
  """What `run_search` did.

  `written`, `evaluations`, `simulations`, `seconds`: this process's (its wall time from start to end);
  `skipped`: questions of this shard already in the output file; `total_evaluations`, `total_seconds`: the
  whole run so far, over every record in the shard's file (earlier, killed processes included; a record's
  seconds are its share of the search time, so work lost to a kill is not counted).
  """
  output_path: str
  shard: tuple[int, int]
  written: int
  skipped: int
  evaluations: int
  simulations: int
  seconds: float
  total_evaluations: int = 0
  total_seconds: float = 0.0


def default_shard() -> tuple[int, int]:
  import jax  # Deferred: the search core itself does not need JAX.
  return jax.process_index(), jax.process_count()


def run_search(examples: Sequence[Any], scorer: Scorer, config: SearchConfig, output_path: os.PathLike | str, *,
               shard: tuple[int, int] | None = None, repair: bool = False, max_active: int = 32,
               on_record: Callable[[SearchRecord], None] | None = None,
               on_round: Callable[[int], None] | None = None) -> SearchRun:
  """Searches this shard's questions and appends one record per question to the output (resumable).

  Args:
    examples: the full question list (every process passes the same list); Example-like objects or
      mappings with `id`, `question`, `answer` and optionally `level`, `subject`. Ids must be unique.
    scorer: evaluates (index into `examples`, Program) pairs; `scorer.depth` is the model's depth.
    config: the search parameters (recorded in every line; a restart must use the same ones).
    output_path: the JSONL output; with several shards, shard i writes `records.shard_path(output_path, i, n)`.
    shard: (i, n): this run takes questions i, i+n, i+2n, ...; default (jax.process_index(),
      jax.process_count()).
    repair: move corrupt lines of an existing output aside instead of refusing to continue.
    max_active: questions advanced together (more fills the device better, costs host memory).
    on_record: called after each record is durably written (progress, or fault injection in tests).
    on_round: called after every round with this process's completed simulations (`search_stream`).

  Raises:
    records.CorruptRecordsError: the existing output has bad lines and `repair` is False.
    ValueError: duplicate example ids, or the existing output was written with another config or depth.
  """
  index, count = records_lib.check_shard(default_shard() if shard is None else shard)
  path = records_lib.shard_path(output_path, index, count)
  ids = [str(example_field(ex, "id")) for ex in examples]
  dupes = sorted(i for i, n in collections.Counter(ids).items() if n > 1)
  if dupes:
    raise ValueError(f"Example ids must be unique; repeated: {dupes[:10]}.")
  existing = records_lib.read_records(path, repair=repair)
  depth = int(scorer.depth)
  expected = config.to_json()
  driver = _driver_config(scorer, max_active)
  other_batching = None
  for number, rec in enumerate(existing, start=1):
    if _normalized(rec.config) != expected or rec.depth != depth:
      raise ValueError(
          f"{path} record {number} (id {rec.id!r}) was written by a search with depth {rec.depth} and "
          f"config {_normalized(rec.config)}; this run has depth {depth} and config {expected}. Resume with the "
          "same settings or write to a new output path.")
    old = _driver(rec.config)
    if other_batching is None and any(old[k] != driver[k] for k in old):
      other_batching = (number, old)
  if other_batching is not None:
    log.warning("%s record %d was searched with batching %s, this run uses %s: the questions searched now may "
                "differ in rare near-ties from an uninterrupted run (each record's config says how it was made).",
                path, other_batching[0], other_batching[1], {k: driver[k] for k in other_batching[1]})
  done = {rec.id for rec in existing}
  mine = range(index, len(examples), count)
  todo = [i for i in mine if ids[i] not in done]
  skipped = len(mine) - len(todo)
  log.info("Search shard %d/%d: %d questions, %d already in %s, %d to go.", index, count, len(mine), skipped,
           path, len(todo))
  start = time.perf_counter()
  written = evaluations = simulations = 0
  new_seconds = 0.0
  with records_lib.RecordWriter(path) as writer:
    for rec in search_stream(examples, todo, scorer, config, max_active=max_active, on_round=on_round):
      writer.write(rec)
      written += 1
      evaluations += rec.evaluations
      simulations += rec.simulations
      new_seconds += rec.seconds or 0.0
      if on_record is not None:
        on_record(rec)
  seconds = time.perf_counter() - start
  earlier_evaluations = sum(r.evaluations for r in existing)
  earlier_seconds = sum(r.seconds or 0.0 for r in existing)
  return SearchRun(str(path), (index, count), written, skipped, evaluations, simulations, seconds,
                   total_evaluations=earlier_evaluations + evaluations,
                   total_seconds=earlier_seconds + new_seconds)

"""The package's layers: imports go down (or sideways inside one package), never up, and never in a cycle.

Every `import` / `from ... import` inside `polar_jax/` counts, function-local ones included (a deferred
import hides a dependency from the import system, not from the design); only `if TYPE_CHECKING:` blocks,
which never run, are left out. Lazy re-exports by name in a package
`__init__` (PEP 562 `__getattr__` over a table of module names) are not imports until used and are checked
by `tests/test_light_imports.py` instead. The layers, lowest first, are documented in docs/design.md.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "polar_jax"

# Module-name prefixes (after "polar_jax.") -> layer; the longest matching prefix decides. A module may import
# from its own layer only inside the same top-level package (search.mcts -> search.records), else lower ones.
LAYERS = {
    "errors": 0, "resources": 0,  # leaves: standard library only
    "workdir": 1, "options_io": 1,  # config identity and done markers; options <-> ConfigDicts
    "summaries": 1,  # TensorBoard scalars (tensorboardX when installed)
    # programs as data and the JSON contracts (light: numpy at most); `programs` is the package __init__
    "programs": 2, "programs.program": 2, "programs.segments": 2, "programs.schedule": 2, "programs.kinds": 2,
    "programs.batching": 2, "programs.prefix_sharing": 2, "records": 2, "stats": 2,
    "search.tree": 3, "search.release": 3, "search.rewards": 3,  # the search trees, the reward protocol (light)
    "menu": 3,  # the menu matrix, the offline lab, its plots (numpy; light)
    "models": 4,  # the decoder and checkpoints (jax)
    "data": 5, "testing": 5, "sharding": 5,  # datasets, prompts, answers; tiny test models; meshes
    "programs.executor": 6, "programs.executor_core": 6, "programs.stop_rules": 6,  # programs on a model
    "programs.completions": 6,
    "program_eval": 7,  # (question, program) pairs on a task
    "search": 8,  # the search driver, records I/O, scorers, interchange, summary
    "menu.build": 8,  # ranking searched programs, running them on every question
    "predictor": 9,
    "options": 10,  # every stage's options (reads the light parts of the layers below)
    "menu.features": 10,  # frozen question features for the menu selectors (encoders, the LLM)
    "menu.samples": 10,  # full-depth samples of the menu's test rows (runs the LLM)
    "inspect": 10,  # per-question views of a workdir's runs, search records and menu (light)
    "train": 11,
    "menu.dense": 12,  # the paper's predictor trained (polar_jax.train) on the menu's dense supervision
    "evaluation": 12,  # the evaluation data model, metrics, every method, the protocol, the report
    "pipeline": 13, "experiments": 14, "main": 14, "search.__main__": 14, "lab": 14,  # apps (entry points above the pipeline)
    "inspect.__main__": 14, "predict": 14,  # the inspect command; new questions through a workdir's choosers
}
LIGHT_PACKAGES = ("programs", "search", "predictor")  # their __init__ re-export lazily


def _module_name(path: pathlib.Path) -> str:
  parts = path.relative_to(ROOT).with_suffix("").parts
  if parts[-1] == "__init__":
    parts = parts[:-1]
  return ".".join(parts)


def _resolve(name: str) -> str:
  """The deepest module a dotted name refers to (`polar_jax.programs.Program` -> `polar_jax.programs`)."""
  parts = name.split(".")
  while parts:
    base = ROOT.joinpath(*parts)
    if base.with_suffix(".py").exists() or (base / "__init__.py").exists():
      return ".".join(parts)
    parts = parts[:-1]
  raise AssertionError(f"cannot resolve {name}")


def _is_type_checking_block(node: ast.AST) -> bool:
  """`if TYPE_CHECKING:` (imports there exist for type checkers only and never run)."""
  return isinstance(node, ast.If) and (
      (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
      or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING"))


def _edges() -> dict[str, set[str]]:
  edges: dict[str, set[str]] = {}
  for path in sorted(PACKAGE.rglob("*.py")):
    module = _module_name(path)
    targets = edges.setdefault(module, set())
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {id(n) for block in ast.walk(tree) if _is_type_checking_block(block)
                   for n in ast.walk(block)}
    for node in ast.walk(tree):
      if id(node) in typing_only:
        continue
      if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("polar_jax"):
        for alias in node.names:
          targets.add(_resolve(f"{node.module}.{alias.name}"))
      elif isinstance(node, ast.Import):
        targets.update(_resolve(a.name) for a in node.names if a.name.startswith("polar_jax"))
    targets.discard(module)
    targets.discard("polar_jax")
  return edges


def layer_of(module: str) -> int:
  name = module.removeprefix("polar_jax.")
  parts = name.split(".")
  for i in range(len(parts), 0, -1):
    if ".".join(parts[:i]) in LAYERS:
      return LAYERS[".".join(parts[:i])]
  raise AssertionError(f"{module} has no layer: add it to LAYERS in tests/test_layering.py and docs/design.md")


def _package(module: str) -> str:
  return module.removeprefix("polar_jax.").split(".")[0]


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
  bad = []
  for a, targets in edges.items():
    if a == "polar_jax":
      continue
    for b in targets:
      la, lb = layer_of(a), layer_of(b)
      if lb > la or (lb == la and _package(a) != _package(b)):
        bad.append(f"{a} (layer {la}) imports {b} (layer {lb})")
  return sorted(bad)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
  """Strongly connected components of more than one module (Tarjan)."""
  index, low, stack, on_stack, out = {}, {}, [], set(), []

  def visit(v, counter=[0]):  # pylint: disable=dangerous-default-value
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on_stack.add(v)
    for w in edges.get(v, ()):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        out.append(sorted(component))

  for v in sorted(edges):
    if v not in index:
      visit(v)
  return out


def test_every_module_has_a_layer():
  for module in _edges():
    if module != "polar_jax":
      layer_of(module)


def test_no_upward_import():
  assert upward_imports(_edges()) == []


def test_no_import_cycle():
  assert cycles(_edges()) == []


def test_the_checker_catches_an_upward_import_and_a_cycle():
  edges = {"polar_jax.models.transformer": {"polar_jax.search.mcts"},
           "polar_jax.search.mcts": {"polar_jax.models.transformer"}}
  assert upward_imports(edges) == ["polar_jax.models.transformer (layer 4) imports polar_jax.search.mcts (layer 8)"]
  assert cycles(edges) == [["polar_jax.models.transformer", "polar_jax.search.mcts"]]


@pytest.mark.parametrize("package", LIGHT_PACKAGES)
def test_light_package_inits_import_nothing_heavy_eagerly(package):
  """A light package's `__init__` may import its light submodules eagerly, nothing of a higher layer."""
  init = f"polar_jax.{package}"
  heavy = [t for t in _edges()[init] if layer_of(t) > 3]
  assert heavy == [], f"{init} imports {heavy} eagerly; re-export them lazily (PEP 562 __getattr__)"


if __name__ == "__main__":  # `python tests/test_layering.py`: print the graph's problems
  graph = _edges()
  print("\n".join(upward_imports(graph)) or "no upward import")
  print("\n".join(" <-> ".join(c) for c in cycles(graph)) or "no cycle")

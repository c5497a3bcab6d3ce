"""The package's layers, checked from its source: a module imports only lower layers (or its
own sub-package), no import cycle, no JAX in the I/O layer, orbax only in the checkpoint
module, no prints, exits or sys.path edits in library code."""

import ast
import os

import pytest

from tests.helpers import REPO

PACKAGE = os.path.join(REPO, "n2v_jax")
# Lowest first. A module may import modules of a lower rank, and modules of its own
# sub-package (or, for the top-level base modules, other base modules of rank 0).
RANKS = {"errors": 0, "reporter": 0, "choices": 0, "preemption": 0, "configs": 0,
         "io": 1, "data": 2, "nn": 3, "workdir": 4, "inference": 5, "training": 6,
         "bioimage": 6}
# rank 7: the command lines and the napari plugin (the user interfaces)
COMMAND_LINES = {"cli", "train", "predict", "evaluate", "export", "sweep", "noise_model",
                 "napari_plugin"}


def _modules() -> dict[str, str]:
  """Dotted module name -> file path, for every module of the package."""
  out = {}
  for root, _, names in os.walk(PACKAGE):
    for n in names:
      if n.endswith(".py"):
        path = os.path.join(root, n)
        rel = os.path.relpath(path, REPO)[:-3].split(os.sep)
        out[".".join(rel[:-1] if rel[-1] == "__init__" else rel)] = path
  return out


MODULES = _modules()


def _group(module: str) -> str:
  parts = module.split(".")
  return parts[1] if len(parts) > 1 else "__init__"


def _rank(module: str) -> int:
  group = _group(module)
  if group in COMMAND_LINES or module.endswith("__main__"):
    return 7
  return RANKS.get(group, 0 if group == "__init__" else -1)


def _imports(path: str) -> list[tuple[str, int]]:
  """(imported module, line) of every import in the file, function-level ones included;
  `from a.b import c` is a.b.c when that is a module."""
  tree = ast.parse(open(path).read())
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found += [(a.name, node.lineno) for a in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      for a in node.names:
        full = f"{node.module}.{a.name}"
        found.append((full if full in MODULES else node.module, node.lineno))
  return found


def test_every_module_has_a_layer():
  unknown = [m for m in MODULES if m != "n2v_jax" and _rank(m) < 0]
  assert not unknown, f"modules outside every layer (add them to RANKS): {unknown}"


def test_imports_run_from_higher_layers_to_lower_ones():
  wrong = []
  for module, path in MODULES.items():
    for target, line in _imports(path):
      if not target.startswith("n2v_jax") or target == "n2v_jax":
        continue
      allowed = (_rank(target) < _rank(module) or _group(target) == _group(module)
                 or target == "n2v_jax.cli"  # the command lines' shared plumbing
                 or (_rank(module) == _rank(target) == 0  # the base modules
                     and "configs" not in (_group(module), _group(target))))
      if not allowed:
        wrong.append(f"{os.path.relpath(path, REPO)}:{line} imports {target}")
  assert not wrong, "\n".join(wrong)


def test_inference_never_imports_training():
  for module, path in MODULES.items():
    if _group(module) == "inference":
      assert not [t for t, _ in _imports(path) if t.startswith("n2v_jax.training")], module


def test_no_import_cycle():
  graph = {m: {t for t, _ in _imports(p) if t in MODULES and t != "n2v_jax"}
           for m, p in MODULES.items()}
  state, stack = {}, []

  def visit(m):
    state[m] = "open"
    stack.append(m)
    for t in sorted(graph.get(m, ())):
      if state.get(t) == "open":
        raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(t):] + [t]))
      if t not in state:
        visit(t)
    stack.pop()
    state[m] = "done"

  for m in sorted(graph):
    if m not in state:
      visit(m)


@pytest.mark.parametrize("forbidden", ["jax", "flax", "optax", "orbax"])
def test_the_io_layer_has_no_jax(forbidden):
  for module, path in MODULES.items():
    if _group(module) == "io" or module in ("n2v_jax.errors", "n2v_jax.reporter",
                                            "n2v_jax.choices", "n2v_jax.preemption"):
      bad = [t for t, _ in _imports(path) if t.split(".")[0] == forbidden]
      assert not bad, f"{module} imports {bad}"


@pytest.mark.parametrize("gui", ["napari", "qtpy", "PyQt5", "PyQt6", "PySide6", "magicgui"])
def test_only_the_napari_plugin_needs_a_gui(gui):
  """The library runs without Qt: only n2v_jax.napari_plugin (an optional extra) imports it."""
  users = {m for m, p in MODULES.items() if any(t.split(".")[0] == gui for t, _ in _imports(p))}
  assert all(_group(m) == "napari_plugin" for m in users), users


def test_only_the_checkpoint_module_imports_orbax():
  users = {m for m, p in MODULES.items() if any(t.startswith("orbax") for t, _ in _imports(p))}
  assert users == {"n2v_jax.workdir.checkpoint"}


def test_library_code_neither_prints_nor_exits():
  """Errors are raised (errors.N2VError) and progress goes through the reporter; only the
  command lines print `error: ...` and set the exit status."""
  found = []
  for module, path in MODULES.items():
    if _rank(module) == 7 or module == "n2v_jax.reporter":
      continue
    tree = ast.parse(open(path).read())
    scripts = [n for n in tree.body if isinstance(n, ast.If) and "__main__" in ast.dump(n.test)]
    skipped = {id(c) for n in scripts for c in ast.walk(n)}  # a module's own `python -m` block
    for node in ast.walk(tree):
      if isinstance(node, ast.Call) and id(node) not in skipped:
        f = node.func
        name = f.id if isinstance(f, ast.Name) else (
            f"{f.value.id}.{f.attr}" if isinstance(f, ast.Attribute)
            and isinstance(f.value, ast.Name) else "")
        if name in ("print", "sys.exit", "exit", "os._exit"):
          found.append(f"{os.path.relpath(path, REPO)}:{node.lineno} {name}()")
  assert not found, "\n".join(found)


def test_no_sys_path_edits():
  """The project is installed (pip install -e .); nothing puts the repository on sys.path
  by hand."""
  found = []
  for top in ("n2v_jax", "tests", "experiments", "notebooks"):
    for root, _, names in os.walk(os.path.join(REPO, top)):
      for n in names:
        if n.endswith((".py", ".ipynb")):
          text = open(os.path.join(root, n)).read()
          if "sys.path.insert" in text or "sys.path.append" in text:
            found.append(os.path.relpath(os.path.join(root, n), REPO))
  found.remove("tests/test_layers.py")  # the strings above
  assert not found, found

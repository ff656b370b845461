"""The package's shape: subpackages by layer, nothing imports upward, no cycles, no
reaching into another module's underscore names, and a holder that cannot be broken by
a package upgrade landing while it holds the lock."""

import ast
import os
import sys

import pytest

PACKAGE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "quiesce")

# Lowest first. A module may import from its own layer and the layers before it.
LAYERS = ("base", "agents", "records", "server", "holder", "commands")
TOP = len(LAYERS)  # quiesce/*.py: the entry points (cli, hooks, completion)
HOLDER_MAIN = "quiesce.holder.process"


def _module_name(path):
    rel = os.path.relpath(path, os.path.dirname(PACKAGE_DIR))[:-3].split(os.sep)
    if rel[-1] == "__init__":
        rel = rel[:-1]
    return ".".join(rel)


def _modules():
    found = {}
    for directory, _dirs, files in os.walk(PACKAGE_DIR):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                found[_module_name(path)] = path
    return found


MODULES = _modules()


def _parse(name):
    with open(MODULES[name], encoding="utf-8") as handle:
        return ast.parse(handle.read(), MODULES[name])


class Import:
    def __init__(self, target, names, node, lazy):
        self.target, self.names, self.node, self.lazy = target, names, node, lazy


def imports_of(name, tree=None):
    """Every quiesce module `name` imports (at module level, or later inside a function)."""
    tree = tree or _parse(name)
    package = name if MODULES[name].endswith("__init__.py") else name.rpartition(".")[0]
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        lazy = id(node) not in top_level
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "quiesce":
                    found.append(Import(alias.name, [], node, lazy))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] != "quiesce":
                continue
            for alias in node.names:
                child = module + "." + alias.name
                if child in MODULES:
                    found.append(Import(child, [], node, lazy))
                else:
                    found.append(Import(module, [alias.name], node, lazy))
    return found


def layer_of(name):
    parts = name.split(".")
    if len(parts) == 1:  # quiesce/__init__.py: the version, nothing else
        return 0
    if parts[1] in LAYERS:
        return LAYERS.index(parts[1])
    return TOP


def test_every_module_is_in_a_layer():
    loose = [name for name, path in MODULES.items()
             if name.count(".") == 1 and not path.endswith("__init__.py") and name.split(".")[1] not in LAYERS]
    # The entry points stay at the top: the installed launchers import quiesce.hooks.
    assert sorted(loose) == ["quiesce.__main__", "quiesce.cli", "quiesce.completion", "quiesce.hooks"]
    for layer in LAYERS:
        assert "quiesce." + layer in MODULES, layer


def test_layer_packages_are_only_a_docstring():
    # fastthaw's import of quiesce.commands must cost nothing before the release.
    for layer in LAYERS:
        tree = _parse("quiesce." + layer)
        assert len(tree.body) == 1 and isinstance(tree.body[0], ast.Expr), layer


def test_nothing_imports_upward():
    upward = ["%s imports %s" % (name, imp.target) for name in MODULES for imp in imports_of(name)
              if layer_of(imp.target) > layer_of(name)]
    assert upward == []


def _graph():
    return {name: {imp.target for imp in imports_of(name) if imp.target in MODULES and imp.target != name}
            for name in MODULES}


def find_cycle(graph):
    """One import cycle as a list of modules, or None."""
    state = {}

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt, stack)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node, [])
            if cycle:
                return cycle
    return None


def test_no_import_cycles():
    # Package __init__ modules are docstrings: importing a.b imports a, which is no edge.
    graph = {name: {t for t in deps if not MODULES[t].endswith("__init__.py")} for name, deps in _graph().items()}
    assert find_cycle(graph) is None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def _module_aliases(name, tree):
    """Local names bound to quiesce modules in `name`."""
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) or isinstance(node, ast.Import):
            for imp in imports_of(name, ast.Module(body=[node], type_ignores=[])):
                if not imp.names:
                    for alias in node.names:
                        local = alias.asname or alias.name.split(".")[-1 if isinstance(node, ast.ImportFrom) else 0]
                        if imp.target.endswith("." + alias.name) or imp.target == alias.name:
                            aliases[local] = imp.target
    return aliases


def test_no_module_uses_another_modules_underscore_names():
    found = []
    for name in MODULES:
        tree = _parse(name)
        for imp in imports_of(name, tree):
            found += ["%s imports %s.%s" % (name, imp.target, n) for n in imp.names if n.startswith("_")
                      and not n.startswith("__")]
        aliases = _module_aliases(name, tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and \
                    node.value.id in aliases and node.attr.startswith("_") and not node.attr.startswith("__"):
                found.append("%s uses %s.%s" % (name, aliases[node.value.id], node.attr))
    assert found == []


def _loaded_at_start(name, seen=None):
    """The quiesce modules importing `name` loads before any of its code runs."""
    seen = set() if seen is None else seen
    if name in seen or name not in MODULES:
        return seen
    seen.add(name)
    parts = name.split(".")
    for i in range(1, len(parts)):
        seen.add(".".join(parts[:i]))
    for imp in imports_of(name):
        if not imp.lazy:
            _loaded_at_start(imp.target, seen)
    return seen


def test_the_holder_loads_all_its_code_before_it_locks():
    """A package upgrade can replace every file while a holder holds the lock: whatever it
    runs later (the release, the records, the recovery) must already be in memory."""
    loaded = _loaded_at_start(HOLDER_MAIN)
    late = sorted("%s imports %s inside a function" % (name, imp.target)
                  for name in loaded for imp in imports_of(name)
                  if imp.lazy and imp.target in MODULES and imp.target not in loaded)
    assert late == []


@pytest.mark.parametrize("bad, expected", [
    ("from quiesce.commands import freeze\n", "upward"),
    ("from quiesce.base.config import _Option\n", "underscore"),
])
def test_the_rules_catch_a_bad_import(bad, expected, tmp_path, monkeypatch):
    """The checks above really look: a planted bad import in a base module is found."""
    path = MODULES["quiesce.base.paths"]
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read() + bad)
    monkeypatch.setattr(sys.modules[__name__], "_parse",
                        lambda name, _real=_parse: tree if name == "quiesce.base.paths" else _real(name))
    if expected == "upward":
        with pytest.raises(AssertionError):
            test_nothing_imports_upward()
    else:
        with pytest.raises(AssertionError):
            test_no_module_uses_another_modules_underscore_names()


def test_hacking_md_names_every_module_in_its_layer():
    with open(os.path.join(os.path.dirname(PACKAGE_DIR), "HACKING.md"), encoding="utf-8") as handle:
        rows = [line for line in handle if line.startswith("| `quiesce/`") or line.startswith("| `") and
                line.split("`")[1].rstrip("/") in LAYERS]
    listed = set()
    for row in rows:
        folder = row.split("`")[1].rstrip("/")
        prefix = "quiesce." if folder == "quiesce" else "quiesce.%s." % folder
        cells = row.split("|")[2]
        listed |= {prefix + name for name in cells.split("`")[1::2]}
    modules = {name for name, path in MODULES.items() if not path.endswith("__init__.py")}
    assert listed == modules

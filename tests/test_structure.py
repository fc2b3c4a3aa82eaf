"""The package's shape: no import circles (deferred imports inside functions included), each layer of fno_jax imports
only what its docstring allows, and fno_jax has at most 12 top-level modules and subpackages.

Read from the source with `ast` (nothing is imported), so a violation names the file and the import.
"""

import ast
import os

from conftest import REPO

PACKAGES = ("fno_jax", "solvers", "experiments")
# What each layer of fno_jax may import from fno_jax (their package docstrings say the same). Top-level modules
# (config, train, checkpoint, pretrained, export, verify, interop) are the public surface above the layers.
LAYERS = {
    "fno_jax.runtime": set(),
    "fno_jax.model": set(),
    "fno_jax.storage": {"fno_jax.runtime", "fno_jax.model", "fno_jax.config", "fno_jax.training.metrics"},
    "fno_jax.data": {"fno_jax.runtime", "fno_jax.model", "fno_jax.storage", "fno_jax.config"},
}


def _modules() -> dict[str, str]:
    """Dotted module name -> file path, for every module of the project's packages."""
    out = {}
    for package in PACKAGES:
        for root, _, files in os.walk(os.path.join(REPO, package)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(root, name)
                    dotted = os.path.relpath(path, REPO)[: -len(".py")].replace(os.sep, ".")
                    out[dotted.removesuffix(".__init__")] = path
    return out


def _imports(path: str, module: str, known: set[str]) -> set[str]:
    """The project modules `module` imports, anywhere in its file (a `from pkg import sub` counts as pkg.sub)."""
    tree = ast.parse(open(path).read())
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            names = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {m: _imports(p, m, known) for m, p in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan). A package's `__init__` importing its own
    submodules is not a circle of concern unless a submodule imports the package back, which counts."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circles():
    graph = _graph()
    # An __init__ that re-exports its submodules is imported by them only through a parent import, which Python
    # resolves; drop package -> own-submodule edges so such re-exports are not counted as circles.
    pruned = {m: {d for d in deps if not d.startswith(m + ".")} for m, deps in graph.items()}
    assert _cycles(pruned) == []


def test_each_layer_imports_only_what_it_may():
    graph = _graph()
    wrong = []
    for module, deps in graph.items():
        layer = next((name for name in LAYERS if module == name or module.startswith(name + ".")), None)
        if layer is None:
            continue
        for dep in deps:
            if not dep.startswith("fno_jax") or dep == layer or dep.startswith(layer + "."):
                continue
            if not any(dep == a or dep.startswith(a + ".") for a in LAYERS[layer]):
                wrong.append(f"{module} imports {dep}")
    assert wrong == []


def test_solvers_never_import_fno_jax_and_fno_jax_never_imports_experiments():
    graph = _graph()
    assert [
        m for m, deps in graph.items() if m.startswith("solvers") and any(d.startswith("fno_jax") for d in deps)
    ] == []
    leaks = [
        m for m, deps in graph.items() if m.startswith("fno_jax") and any(d.startswith("experiments") for d in deps)
    ]
    assert leaks == []


def test_fno_jax_has_at_most_twelve_top_level_entries():
    entries = [
        name.removesuffix(".py")
        for name in os.listdir(os.path.join(REPO, "fno_jax"))
        if (name.endswith(".py") and name != "__init__.py")
        or os.path.isfile(os.path.join(REPO, "fno_jax", name, "__init__.py"))
    ]
    assert len(entries) <= 12, sorted(entries)


def test_the_mutation_table_fits_the_code():
    """`make mutation` plants each bug by replacing an exact snippet: a refactor that moves one must update the
    table (tests/mutation.py), or the run stops; checked here so that the table cannot rot between runs."""
    import mutation  # tests/ is on the path, as for conftest

    assert mutation.check_table(mutation.MUTATIONS) == []

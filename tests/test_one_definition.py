"""Static checks of the source (AST, no imports of the checked code): one definition of row
normalisation, an import graph without circles, and no module using another's private names.

* Row normalisation lives in :mod:`clipgeo.core.arrays` (``normalize_rows``, with the zero-row
  policy; ``nonzero_row_norms`` for formulas that divide by ``‖x‖`` inside a product). Anywhere
  else, a division whose divisor is a row norm computed on the spot (``np.linalg.norm(.., axis=..)``,
  ``row_norms``, ``row_norms64``, ``np.sqrt(np.einsum(..))``, directly or through a name assigned
  from one in the same function) is a normalisation of its own, without the zero-row check.
* Every ``import`` anywhere in a module is an edge: at the top, inside functions (deferred) and
  under ``if TYPE_CHECKING:`` (an annotation-only import is a circle broken by hand too); only a
  package ``__init__``'s ``TYPE_CHECKING`` imports of its own submodules are not (they declare
  its lazily loaded names for type checkers, and nothing runs them). The graph over the modules
  of ``clipgeo/``, ``flows/`` and ``dashboards/`` must have no cycle.
* No module imports another project module's private name (``from m import _x``) or reads one
  off an imported project module (``m._x``): a helper two modules share is public in the lower
  one. Private names of third-party packages (torchvision's ``_compute_resized_output_size``)
  are outside this rule: only the project's own modules are checked as the source of a name.
"""

from __future__ import annotations

import ast
from collections.abc import Collection
from pathlib import Path

import numpy as np
import pytest

from clipgeo.core.arrays import first_caption_pairs, normalize_rows, row_norms64

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "clipgeo"
#: The project's packages whose modules the import checks cover.
ROOTS = ("clipgeo", "flows", "dashboards")
HOME_OF_NORMALISATION = "clipgeo/core/arrays.py"
#: Known divisions by unchecked row norms outside the one helper, with the reason they stay.
ALLOWED: dict[tuple[str, str], str] = {}
_NORM_FUNCS = {"row_norms", "row_norms64"}


def _modules() -> dict[str, Path]:
    out = {}
    for root in ROOTS:
        for f in (REPO / root).rglob("*.py"):
            rel = f.relative_to(REPO).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            out[".".join(parts)] = f
    return out


def _name(func: ast.expr) -> str | None:
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None


def _is_row_norm(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    name = _name(node.func)
    if name in _NORM_FUNCS:
        return True
    if name == "norm" and any(k.arg == "axis" for k in node.keywords):
        return True
    return name == "sqrt" and bool(node.args) and isinstance(node.args[0], ast.Call) and _name(node.args[0].func) == "einsum"


def _scope_nodes(scope: ast.AST):
    """The nodes of one scope, not descending into nested functions, lambdas or classes."""
    stack = list(ast.iter_child_nodes(scope))
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            stack.extend(ast.iter_child_nodes(node))


def own_normalisations(source: str) -> list[tuple[str, int]]:
    """``(scope name, line)`` of every division by row norms computed in that scope."""
    tree = ast.parse(source)
    scopes = [(tree, "<module>")] + [(n, n.name) for n in ast.walk(tree)
                                     if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    hits = []
    for scope, scope_name in scopes:
        nodes = list(_scope_nodes(scope))
        normed = {x.id for n in nodes if isinstance(n, ast.Assign) and any(_is_row_norm(v) for v in ast.walk(n.value))
                  for t in n.targets for x in ast.walk(t) if isinstance(x, ast.Name)}

        def bad(divisor: ast.AST) -> bool:
            return any(_is_row_norm(x) or (isinstance(x, ast.Name) and x.id in normed) for x in ast.walk(divisor))

        for n in nodes:
            if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div) and bad(n.right):
                hits.append((scope_name, n.lineno))
            elif isinstance(n, ast.AugAssign) and isinstance(n.op, ast.Div) and bad(n.value):
                hits.append((scope_name, n.lineno))
            elif isinstance(n, ast.Call) and _name(n.func) == "divide" and len(n.args) > 1 and bad(n.args[1]):
                hits.append((scope_name, n.lineno))
    return hits


def test_the_checker_finds_a_normalisation_of_its_own():
    src = ("import numpy as np\n"
           "def f(x):\n    return x / np.linalg.norm(x, axis=1, keepdims=True)\n"
           "def g(x):\n    n = row_norms(x)\n    return (1.0 / n) @ x\n"
           "def h(x):\n    x /= np.sqrt(np.einsum('ij,ij->i', x, x))[:, None]\n"
           "def ok(x, v):\n    return x / np.linalg.norm(v)\n")
    assert own_normalisations(src) == [("f", 3), ("g", 6), ("h", 8)]


def test_no_module_normalises_rows_itself():
    found = []
    for f in sorted(PKG.rglob("*.py")):
        rel = f.relative_to(REPO).as_posix()
        if rel == HOME_OF_NORMALISATION:
            continue
        found += [f"{rel}:{line} ({scope})" for scope, line in own_normalisations(f.read_text())
                  if (rel, scope) not in ALLOWED]
    assert not found, ("rows normalised outside clipgeo.core.arrays (use normalize_rows, or nonzero_row_norms "
                       f"inside a product): {found}")


def _import_targets(node: ast.Import | ast.ImportFrom, name: str, is_package: bool,
                    modules: Collection[str]) -> list[tuple[ast.alias, str, bool]]:
    """``(alias, project module, the name is that module)`` for each name of one import statement
    that is, or comes from, a project module (relative imports resolved; a name imported from a
    module gives that module)."""
    if isinstance(node, ast.Import):
        return [(a, a.name, True) for a in node.names if a.name in modules]
    base = node.module or ""
    if node.level:
        pkg = name.split(".") if is_package else name.split(".")[:-1]
        pkg = pkg[: len(pkg) - (node.level - 1)]
        base = ".".join(pkg + ([node.module] if node.module else []))
    out = []
    for a in node.names:
        if f"{base}.{a.name}" in modules:
            out.append((a, f"{base}.{a.name}", True))
        elif base in modules:
            out.append((a, base, False))
    return out


def _import_nodes(tree: ast.AST):
    """``(import statement, under TYPE_CHECKING)`` for every import anywhere in ``tree``."""
    def visit(nodes, typing_only: bool):
        for node in nodes:
            if isinstance(node, ast.If) and _name(node.test) == "TYPE_CHECKING":
                yield from visit(node.body, True)
                yield from visit(node.orelse, typing_only)
                continue
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                yield node, typing_only
            yield from visit(ast.iter_child_nodes(node), typing_only)

    yield from visit(ast.iter_child_nodes(tree), False)


def imports_of(source: str, name: str, modules: Collection[str], *, is_package: bool = False) -> set[str]:
    """The project modules module ``name`` imports (module doc): top-level, deferred and
    annotation-only imports, less a package's ``TYPE_CHECKING`` imports of its own submodules."""
    out: set[str] = set()
    for node, typing_only in _import_nodes(ast.parse(source)):
        found = {module for _, module, _ in _import_targets(node, name, is_package, modules)}
        if typing_only and is_package:
            found = {m for m in found if not m.startswith(name + ".")}
        out |= found
    out.discard(name)
    return out


def private_uses(source: str, name: str, modules: Collection[str], *, is_package: bool = False
                 ) -> list[tuple[int, str]]:
    """``(line, "module._name")`` for each private name of another project module that module
    ``name`` imports (``from m import _x``, relative or not) or reads off an imported project
    module (``m._x``, ``pkg.m._x``). Dunder names are not private; names of modules outside
    ``modules`` (third-party ones) are not checked."""
    tree = ast.parse(source)
    bound: dict[str, str] = {}          # local name -> the project module it is
    hits = []
    for node, _ in _import_nodes(tree):
        for a, home, is_module in _import_targets(node, name, is_package, modules):
            local = a.asname or a.name.split(".")[0]
            if isinstance(node, ast.Import):
                bound[local] = a.name if a.asname else local     # `import p.a` binds p
                continue
            if is_module:                                        # `from p import a`: a is a module
                bound[local] = home
                home = home.rpartition(".")[0]
            if home != name and _private(a.name):
                hits.append((node.lineno, f"{home}.{a.name}"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            owner = _dotted(node.value)
            head, _, rest = (owner or "").partition(".")
            if head not in bound:
                continue
            module = bound[head] + ("." + rest if rest else "")
            if module in modules and module != name:
                hits.append((node.lineno, f"{module}.{node.attr}"))
    return sorted(hits)


def _private(attr: str) -> bool:
    return attr.startswith("_") and not (attr.startswith("__") and attr.endswith("__"))


def _dotted(node: ast.expr) -> str | None:
    """``a.b.c`` for a chain of attributes on a name, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return ".".join([node.id, *reversed(parts)]) if isinstance(node, ast.Name) else None


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_import_cycles_are_found():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_checker_sees_deferred_and_annotation_only_imports():
    mods = {"p", "p.a", "p.b", "p.c", "p.d", "p.e"}
    src = ("from typing import TYPE_CHECKING\n"
           "import p.a, p.e, os\n"
           "if TYPE_CHECKING:\n    from p.b import B\nelse:\n    from p import c\n"
           "def f():\n    from .d import x\n    import numpy\n")
    assert imports_of(src, "p.e", mods) == {"p.a", "p.b", "p.c", "p.d"}
    # a package's lazily loaded names, declared for type checkers: no edge; a real import is one
    lazy = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from p.a import A\n"
    assert imports_of(lazy, "p", mods, is_package=True) == set()
    assert imports_of(lazy + "from p.b import B\n", "p", mods, is_package=True) == {"p.b"}
    # the three circles of issue 33, as they were: each is found
    assert import_cycles({"m": imports_of("def f():\n    from s import sec\n", "m", {"m", "s"}),
                          "s": imports_of("if TYPE_CHECKING:\n    from m import RunData\n", "s", {"m", "s"})}
                         ) == [["m", "s"]]
    assert import_cycles({"b": imports_of("def f():\n    from t import x\n", "b", {"b", "t"}),
                          "t": imports_of("def g():\n    from b import _now\n", "t", {"b", "t"})}) == [["b", "t"]]


def test_imports_have_no_cycle():
    """Over clipgeo/, flows/ and dashboards/, deferred and annotation-only imports included: a
    shared type or helper lives in the lower module, so every import runs one way."""
    modules = _modules()
    graph = {m: imports_of(f.read_text(), m, modules, is_package=f.name == "__init__.py") for m, f in modules.items()}
    assert graph["clipgeo.stages.measure"] >= {"clipgeo.stages.measure_topology", "clipgeo.stages.sections"}
    assert "flows.commands" in graph["flows.precheck"]            # imported inside a function
    assert "dashboards.output" in graph["dashboards.trajectory"]
    assert import_cycles(graph) == []


def test_the_private_name_checker_finds_each_form():
    mods = {"p", "p.a", "p.e"}
    src = ("from p.a import _x, y\n"
           "from .a import _z as z\n"
           "import p.a as pa\n"
           "from p import a\n"
           "import p.a\n"
           "from torchvision.transforms.functional import _compute_resized_output_size\n"
           "from p.a import import_arrays as _import, a as obj\n"      # an alias; an object named a
           "def f():\n    from p.e import _mine\n"
           "    return pa._w, a._v, a.ok, a.__doc__, p.a._u, _import, obj._fine\n")
    assert private_uses(src, "p.e", mods) == [(1, "p.a._x"), (2, "p.a._z"), (10, "p.a._u"), (10, "p.a._v"),
                                              (10, "p.a._w")]


def test_no_module_uses_another_modules_private_names():
    modules = _modules()
    found = [f"{f.relative_to(REPO).as_posix()}:{line} {what}" for m, f in sorted(modules.items())
             for line, what in private_uses(f.read_text(), m, modules, is_package=f.name == "__init__.py")]
    assert not found, ("private names used outside their module (make the shared helper public in the lower "
                       f"module, or move it down a layer): {found}")


# ------------------------------------------------------------------------ the helpers themselves


def test_normalize_rows_against_numpy_and_in_float16():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1000, 24)) * rng.uniform(0.1, 50, (1000, 1))
    ref = x / np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_allclose(normalize_rows(x, block=64), ref, rtol=1e-14, atol=1e-15)
    x16 = x.astype(np.float16)
    got = normalize_rows(x16, dtype=np.float16, block=100)
    assert got.dtype == np.float16
    ref16 = (x16.astype(np.float64) / np.linalg.norm(x16.astype(np.float64), axis=1, keepdims=True)).astype(np.float16)
    np.testing.assert_array_equal(got, ref16)   # float64 arithmetic, one rounding to float16
    np.testing.assert_allclose(row_norms64(x16, block=7), np.linalg.norm(x16.astype(np.float64), axis=1), rtol=1e-15)
    stored = np.linalg.norm(x, axis=1).astype(np.float32)   # a stored norm column
    np.testing.assert_allclose(normalize_rows(x, norms=stored), x / stored.astype(np.float64)[:, None], rtol=1e-15)


def test_normalize_rows_refuses_zero_rows_naming_the_row():
    x = np.ones((10, 3))
    x[7] = 0
    with pytest.raises(ValueError, match=r"^img: row 7 is a zero vector"):
        normalize_rows(x, "img", block=3)
    with pytest.raises(ValueError, match=r"^img: row 107 is a zero vector"):
        normalize_rows(x, "img", row_offset=100)
    with pytest.raises(ValueError, match="norms has shape"):
        normalize_rows(x[:2], norms=np.ones(3))


def test_first_caption_pairs_against_a_loop():
    rng = np.random.default_rng(3)
    idx = rng.integers(-1, 40, size=300)
    img_rows, cap_rows = first_caption_pairs(idx, 45)
    first: dict[int, int] = {}
    for c, i in enumerate(idx.tolist()):
        if i >= 0:
            first.setdefault(i, c)
    assert img_rows.tolist() == sorted(first)
    assert cap_rows.tolist() == [first[i] for i in sorted(first)]
    with pytest.raises(ValueError, match="below 45"):
        first_caption_pairs(np.array([0, 45]), 45)


def test_sql_first_caption_is_the_python_one(tmp_path):
    """The views' ``first_caption(caption, sample_id)`` picks, per image, the caption that
    ``first_caption_pairs`` pairs it with when captions are in sample_id order (as a run's are)."""
    from clipgeo.core.config import DataHome
    from clipgeo.store import catalog

    rng = np.random.default_rng(5)
    n_img, n_txt = 30, 200
    owner = rng.integers(0, n_img, n_txt)
    sample_ids = np.array([f"s{k:04d}" for k in rng.permutation(n_txt)])
    captions = np.array([f"caption {k}" for k in range(n_txt)])
    order = np.argsort(sample_ids)
    img_rows, cap_rows = first_caption_pairs(owner[order], n_img)
    expected = {f"i{i}": captions[order][c] for i, c in zip(img_rows.tolist(), cap_rows.tolist())}
    with catalog.session(DataHome(tmp_path)) as con:
        con.execute("CREATE TEMP TABLE caps (image_id VARCHAR, sample_id VARCHAR, caption VARCHAR)")
        con.executemany("INSERT INTO caps VALUES (?, ?, ?)",
                        [(f"i{o}", s, c) for o, s, c in zip(owner.tolist(), sample_ids.tolist(), captions.tolist())])
        got = dict(catalog.execute(con, "SELECT image_id, first_caption(caption, sample_id) FROM caps GROUP BY image_id"))
    assert got == expected

"""The folders of src/inversa show the architecture: no import circles, no import up the room order.

The import graph is read from the AST of every module (relative, absolute and function-local imports
alike, ``from pkg import module`` as an edge to the module); the rooms and their order are those of
docs/architecture.md. Each failure prints the offending edges.
"""
from __future__ import annotations

import ast
import importlib
import pathlib
import re

SRC = pathlib.Path(__file__).resolve().parents[1] / "src"

# lowest first: a module may import its own room and the rooms before it, never one after it
ROOMS = ("core", "io", "tiny", "models", "methods", "inversion", "editing", "bench", "cli", "")
# (importer, imported): why it is allowed for now
ALLOWED = {
}
MAX_LINES = 50
# files the integrator is rewriting; their long functions are theirs to split
LONG_EXEMPT = ()


def modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in (SRC / "inversa").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _base(module: str, path: pathlib.Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _targets(module: str, path: pathlib.Path, node: ast.AST, known: dict) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom):
        base = _base(module, path, node)
        return [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
    return []


def graph() -> dict[str, set[str]]:
    """module -> the inversa modules it imports (anywhere in its body)."""
    known = modules()
    edges: dict[str, set[str]] = {m: set() for m in known}
    for module, path in known.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            for target in _targets(module, path, node, known):
                while target and target not in known:
                    target = target.rpartition(".")[0]
                if target and target != module:
                    edges[module].add(target)
    return edges


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ROOMS else ""


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(root: str) -> None:
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def _without_allowed(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    return {m: {t for t in ts if (m, t) not in ALLOWED} for m, ts in edges.items()}


def test_every_module_is_in_a_room():
    loose = sorted(m for m in modules() if room(m) == "" and m not in ("inversa", "inversa.__main__"))
    assert not loose, "modules outside the rooms of docs/architecture.md: " + ", ".join(loose)


def test_no_import_circles():
    edges = _without_allowed(graph())
    found = cycles(edges)
    lines = []
    for comp in found:
        inside = set(comp)
        lines += [f"  {m} -> {t}" for m in comp for t in sorted(edges[m] & inside)]
    assert not found, f"{len(found)} import circle(s):\n" + "\n".join(lines)


def test_no_upward_imports():
    rank = {name: k for k, name in enumerate(ROOMS)}
    up = [f"  {m} ({room(m) or 'inversa'}) -> {t} ({room(t) or 'inversa'})"
          for m, ts in sorted(_without_allowed(graph()).items()) for t in sorted(ts)
          if rank[room(t)] > rank[room(m)]]
    assert not up, f"{len(up)} import(s) up the room order {' < '.join(r or 'inversa' for r in ROOMS)}:\n" + "\n".join(up)


def test_allowed_edges_still_exist():
    """An allow-list entry whose import is gone must go too."""
    edges = graph()
    stale = [f"  {m} -> {t}" for m, t in ALLOWED if t not in edges.get(m, set())]
    assert not stale, "allow-listed imports that no longer exist:\n" + "\n".join(stale)


def test_the_architecture_page_lists_every_room():
    page = (SRC.parent / "docs" / "architecture.md").read_text()
    missing = [r for r in ROOMS if r and f"{r}/" not in page]
    assert not missing, f"docs/architecture.md does not show the room(s) {', '.join(missing)}"


def long_functions() -> list[str]:
    out = []
    for path in sorted((SRC / "inversa").rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel in LONG_EXEMPT:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_LINES:
                    out.append(f"  {rel}:{node.lineno} {node.name} ({lines} lines)")
    return out


def test_no_function_over_50_lines():
    found = long_functions()
    assert not found, f"{len(found)} function(s) over {MAX_LINES} lines:\n" + "\n".join(found)


def _resolves(name: str) -> bool:
    """Whether a dotted ``inversa....`` name is a module or an attribute reached from one."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for part in parts[i:]:
                obj = getattr(obj, part)
        except AttributeError:
            return False
        return True
    return False


def test_every_dotted_name_in_code_and_docs_exists():
    """Error messages and docs name real modules and functions (moved ones left stale paths behind)."""
    root = SRC.parent
    texts = [*(SRC / "inversa").rglob("*.py"), *(root / "docs").glob("*.md"), root / "README.md"]
    names = {m.group(0): path for path in texts
             for m in re.finditer(r"\binversa(?:\.[A-Za-z_]\w*)+", path.read_text())}
    names.pop("inversa.checkpoint", None)  # the safetensors metadata key, not a module
    stale = [f"  {name} ({path.relative_to(root)})" for name, path in sorted(names.items()) if not _resolves(name)]
    assert not stale, "names that do not exist:\n" + "\n".join(stale)

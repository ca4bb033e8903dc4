"""Imports go one way: leaves -> tables -> metrics -> schemas, infrastructure -> state -> reports
(the route declarations), hook -> HTTP, CLI -> the composition root. Read from the source (every
import, lazy ones included; ``TYPE_CHECKING`` ones are not run and are left out), so a new cycle or
a backward import fails here."""

from __future__ import annotations

import ast
import pathlib

import flowpilot_analytics

PACKAGE = pathlib.Path(flowpilot_analytics.__file__).parent

#: Each module's level; a module may import only modules of a lower level.
LAYERS: dict[str, int] = {
    "config": 0,
    "periods": 0,
    "errors": 0,
    "signals": 0,
    "sqlite": 0,
    "storage": 0,
    "deadline": 0,
    "timeutil": 0,
    "telemetry": 0,
    "business_hours": 0,
    "savings": 0,
    "replica": 0,
    "identity": 1,
    "tables": 2,
    "activities": 3,
    "calendars": 3,
    "baselines": 3,
    "escalations": 4,
    "psa_metrics": 4,
    "schemas": 5,
    "cache": 5,
    "ratelimit": 5,
    "deadletter": 5,
    "state": 6,
    "reports": 7,
    "hook": 7,
    "openapi": 8,
    "web": 8,
    "dashboard": 8,
    "routes": 9,
    "cli": 9,
    "extension": 10,
    "__init__": 11,
}


def _imports(module: str) -> set[str]:
    """The package modules ``module`` imports at run time (at any depth, except under
    ``TYPE_CHECKING``)."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(child) for stmt in node.body for child in ast.walk(stmt)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module == "flowpilot_analytics":
            found |= {alias.name if alias.name in LAYERS else "__init__" for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "flowpilot_analytics."
        ):
            found.add(t_module(node.module or ""))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "flowpilot_analytics":
                    found.add("__init__")
                elif alias.name.startswith("flowpilot_analytics."):
                    found.add(t_module(alias.name))
    return found


def t_module(dotted: str) -> str:
    return dotted.split(".")[1]


def test_every_module_has_a_level() -> None:
    modules = {path.stem for path in PACKAGE.glob("*.py")}
    assert modules == set(LAYERS), (
        f"give each new module a level in LAYERS: {sorted(modules ^ set(LAYERS))}"
    )


def test_imports_only_go_down_the_layers() -> None:
    backward = [
        f"{module} (level {level}) imports {target} (level {LAYERS[target]})"
        for module, level in LAYERS.items()
        for target in sorted(_imports(module))
        if LAYERS[target] >= level
    ]
    assert backward == []


def test_only_the_package_root_imports_the_composition_root() -> None:
    importers = sorted(module for module in LAYERS if "extension" in _imports(module))
    assert importers == ["__init__"]


def test_there_is_no_import_cycle() -> None:
    graph = {module: _imports(module) for module in LAYERS}
    visiting: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> None:
        assert module not in visiting, " -> ".join([*visiting[visiting.index(module) :], module])
        if module in done:
            return
        visiting.append(module)
        for target in graph[module]:
            visit(target)
        visiting.pop()
        done.add(module)

    for module in graph:
        visit(module)

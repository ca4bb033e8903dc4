"""docs/quickstart.md as written: its files make a package in an empty folder, its shell steps run
there with its environment (``flask db init/migrate/upgrade``, ``doctor``), and its first request
answers 200 with the report it shows, on SQLite and on PostgreSQL."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import shlex
import subprocess
import sys
import typing as t

import pytest

from .conftest import PG_ADMIN_URL
from .helpers import throwaway_database

PAGE = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "quickstart.md"
)
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
FILE_MARK = re.compile(r"# ([\w/]+\.py)\n")
#: A hang guard for one step, far above what any step takes.
STEP_TIMEOUT = 300
#: What the page must run, in this order (each a prefix of one of its commands).
REQUIRED_STEPS = [
    ["flask", "db", "init"],
    ["flask", "db", "migrate"],
    ["flask", "db", "upgrade"],
    ["flask", "flowpilot-analytics", "doctor"],
    ["python", "first_request.py"],
]


class Page(t.NamedTuple):
    """The quickstart, read: its files, what it installs, its environment, commands and output."""

    files: dict[str, str]
    installs: list[str]
    env: dict[str, str]
    commands: list[list[str]]
    output: str


def read_page() -> Page:
    """Every block of the page, each one used: a ``python`` block is a file (its first line names
    it), a ``bash`` line installs, exports or runs, the ``text`` block is the printed output."""
    with open(PAGE, encoding="utf-8") as handle:
        blocks = FENCE.findall(handle.read())
    files: dict[str, str] = {}
    installs: list[str] = []
    env: dict[str, str] = {}
    commands: list[list[str]] = []
    outputs: list[str] = []
    for language, body in blocks:
        if language == "python":
            mark = FILE_MARK.match(body)
            assert mark, f"a python block without its file name as first line:\n{body}"
            files[mark.group(1)] = body
        elif language == "bash":
            for line in body.splitlines():
                words = shlex.split(line, comments=True)
                if words[:2] == ["pip", "install"]:
                    installs += words[2:]
                elif words[:1] == ["export"]:
                    name, _, value = words[1].partition("=")
                    assert len(words) == 2 and value, f"not `export NAME=value`: {line}"
                    env[name] = value
                elif words:
                    assert words[0] in ("flask", "python"), (
                        f"a shell step the test cannot run: {line}"
                    )
                    commands.append(words)
        else:
            assert language == "text", f"a {language} block: file, shell step or output?"
            outputs.append(body)
    assert len(outputs) == 1, "one text block: what the first request prints"
    return Page(files, installs, env, commands, outputs[0])


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_page_installs_what_its_files_import_and_exports_flask_variables() -> None:
    page = read_page()
    imported = set()
    for source in page.files.values():
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    local = {path.split("/")[0].removesuffix(".py") for path in page.files}
    third_party = imported - set(sys.stdlib_module_names) - local
    found = importlib.metadata.packages_distributions()
    needed = {normalized(d) for module in third_party for d in found[module]}
    brought = {
        normalized(re.match(r"[A-Za-z0-9._-]+", r)[0])
        for r in importlib.metadata.requires("flowpilot_analytics") or []
        if ";" not in r
    }
    installed = {normalized(re.split(r"[\[<>=~! ]", word)[0]) for word in page.installs}
    assert needed - brought - installed == set(), page.installs
    assert "flowpilot-analytics" in installed
    assert page.env and all(name.startswith("FLASK_") for name in page.env), page.env
    assert {"FLASK_APP", "FLASK_SECRET_KEY", "FLASK_SQLALCHEMY_DATABASE_URI"} <= set(page.env)
    positions = []
    for step in REQUIRED_STEPS:
        matches = [i for i, c in enumerate(page.commands) if c[: len(step)] == step]
        assert matches, f"the page never runs {' '.join(step)}"
        positions.append(matches[0])
    assert positions == sorted(positions), page.commands


@pytest.fixture
def host_database_uri(backend: str) -> t.Iterator[str | None]:
    """PostgreSQL: a fresh database of its own, dropped after; SQLite: ``None``, the page's URI."""
    if backend == "sqlite":
        yield None
        return
    with throwaway_database(PG_ADMIN_URL, "fpa_quickstart") as url:
        yield url


def test_the_page_runs_as_written(
    backend: str, host_database_uri: str | None, tmp_path: t.Any
) -> None:
    page = read_page()
    for path, source in page.files.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(source, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLASK_")}
    env.update(page.env)
    if host_database_uri is None:
        assert page.env["FLASK_SQLALCHEMY_DATABASE_URI"].startswith("sqlite:///")
    else:
        env["FLASK_SQLALCHEMY_DATABASE_URI"] = host_database_uri
    bin_dir = os.path.dirname(sys.executable)
    outputs = []
    for command in page.commands:
        program = sys.executable if command[0] == "python" else os.path.join(bin_dir, command[0])
        done = subprocess.run(
            [program, *command[1:]],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=STEP_TIMEOUT,
        )
        assert done.returncode == 0, f"{shlex.join(command)}:\n{done.stdout}\n{done.stderr}"
        outputs.append(done.stdout)
        if command[:3] == ["flask", "db", "migrate"]:
            (script,) = (tmp_path / "migrations" / "versions").glob("*.py")
            source = script.read_text(encoding="utf-8")
            for table in ("users", "ai_sessions", "session_handoffs", "psa_activity_logs"):
                assert f"op.create_table('{table}'" in source
            assert "flowpilot_analytics" not in source  # only op and sa: it runs as generated
    if host_database_uri is None:
        assert (tmp_path / "instance" / "yourapp.db").is_file()  # the page's URI, in the folder

    doctor = outputs[[c[:2] for c in page.commands].index(["flask", "flowpilot-analytics"])]
    assert "ok " in doctor and "MISSING" not in doctor, doctor  # exit status 0: all in place
    first_request = outputs[page.commands.index(["python", "first_request.py"])]
    status, _, text = first_request.strip().partition(" ")
    body = json.loads(text)
    assert status == "200", text
    assert body["n_handoffs_claimed"] == body["n_handoffs_with_action"] == 1
    assert body["median_seconds"] == body["avg_seconds"] == pytest.approx(90.0)
    assert body["target"]["seconds"] == 900.0  # FLASK_FLOWPILOT_ANALYTICS_TARGET_SECONDS reached it
    assert isinstance(body["distribution"]["buckets"], list) and body["metric_definition"]
    shown_status, _, shown = page.output.strip().partition(" ")
    assert shown_status == status
    shown_pairs = re.findall(r'"\w+":[^,{}…]+', shown)
    assert shown_pairs, page.output
    for pair in shown_pairs:  # what the page shows is what it printed
        assert pair in text, pair

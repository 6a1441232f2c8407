"""The layout's promises, checked on the source: who may import whom.

One room per process (README, "Architecture"): the conductor's code
(conductor/, and sourcehost/ for the CloudStack KVM host) and the agent's
(agent/, with agent/mirror/ for a warm migration's target) talk only
through their RPC API modules; what both use sits outside both rooms
(common/, qemu_img.py, qcow2.py, guestview.py, virt.py, transfer/, ...).
"""

import ast
import pathlib
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
PACKAGE = REPO / "cs2os_agent"
MAX_LINES = 450

CONDUCTOR = ("cs2os_agent.conductor", "cs2os_agent.sourcehost")
AGENT = ("cs2os_agent.agent",)
# The other room's RPC client: how a process calls the other one.
RPC_API = {"cs2os_agent.agent.rpcapi", "cs2os_agent.conductor.rpcapi"}


def _module_name(path):
    parts = path.relative_to(REPO).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path):
    """Every cs2os_agent module ``path`` imports, as dotted names."""
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                full = "%s.%s" % (node.module, alias.name)
                where = REPO / full.replace(".", "/")
                is_module = where.with_suffix(".py").exists() \
                    or where.is_dir()
                found.add(full if is_module else node.module)
    return {name for name in found if name.split(".")[0] in (
        "cs2os_agent", "tests")}


def _in(name, rooms):
    return any(name == r or name.startswith(r + ".") for r in rooms)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _arrows(source_rooms, target_rooms):
    return sorted(
        (name, target)
        for name, path in MODULES.items() if _in(name, source_rooms)
        for target in _imports(path)
        if _in(target, target_rooms) and target not in RPC_API)


def test_the_conductor_imports_nothing_of_the_agent_but_its_rpc_api():
    assert _arrows(CONDUCTOR, AGENT) == []


def test_the_agent_imports_nothing_of_the_conductor_but_its_rpc_api():
    assert _arrows(AGENT, CONDUCTOR) == []


def test_the_shared_modules_import_neither_room():
    shared = [name for name in MODULES
              if not _in(name, CONDUCTOR + AGENT + (
                  "cs2os_agent.cmd", "cs2os_agent.api",
                  "cs2os_agent.wsgi"))]
    assert "cs2os_agent.qcow2" in shared and "cs2os_agent.common.nbd" \
        in shared
    arrows = sorted((name, target) for name in shared
                    for target in _imports(MODULES[name])
                    if _in(target, CONDUCTOR + AGENT)
                    and target not in RPC_API)
    assert arrows == []


def test_the_cli_imports_only_the_vocabulary_of_the_service():
    # The openstack CLI loads the plugin in every command: it stays light.
    service = sorted(
        (name, target) for name in MODULES if _in(name, ("cs2os_agent.osc",))
        for target in _imports(MODULES[name])
        if not _in(target, ("cs2os_agent.osc",))
        and target not in ("cs2os_agent", "cs2os_agent.common.states",
                           "cs2os_agent.common.microversions"))
    assert service == []


def test_the_microversion_table_needs_only_the_standard_library():
    # The CLI reads it (osc/versions.py) in an install without the
    # server's requirements.
    tree = ast.parse((PACKAGE / "common" / "microversions.py").read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom)}
    assert imported <= set(sys.stdlib_module_names)


def test_states_depends_on_nothing():
    tree = ast.parse((PACKAGE / "common" / "states.py").read_text())
    assert [node for node in ast.walk(tree)
            if isinstance(node, (ast.Import, ast.ImportFrom))] == []


SOURCES = sorted(str(p.relative_to(REPO)) for root in (
    "cs2os_agent", "tools", "tests") for p in (REPO / root).rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES)
def test_every_module_is_under_the_size_limit(path):
    lines = (REPO / path).read_text().count("\n")
    assert lines < MAX_LINES, "%s has %d lines" % (path, lines)


def test_no_tool_imports_the_tests():
    arrows = sorted(
        (str(path.relative_to(REPO)), target)
        for path in (REPO / "tools").rglob("*.py")
        for target in _imports(path) if target.split(".")[0] == "tests")
    assert arrows == []


def _attribute_uses(path):
    """(alias, attribute, line) for every ``alias.attribute`` in ``path``
    whose alias names an imported cs2os_agent module."""
    tree = ast.parse(path.read_text())
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module \
                and node.module.startswith("cs2os_agent"):
            for alias in node.names:
                full = "%s.%s" % (node.module, alias.name)
                if full in MODULES:
                    aliases[alias.asname or alias.name] = full
    return [(aliases[node.value.id], node.attr, node.lineno)
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases]


def test_code_outside_the_unit_tests_names_what_exists():
    # The tools, and the tests that need services to run, are not imported
    # by the unit tests: a name moved away from a module they use would
    # only fail where those run.
    import importlib
    missing = []
    paths = [p for root in ("tools", "tests/functional", "tests/e2e",
                            "tests/faults")
             for p in (REPO / root).rglob("*.py")]
    for path in paths:
        for module, attribute, line in _attribute_uses(path):
            if not hasattr(importlib.import_module(module), attribute):
                missing.append("%s:%d %s.%s" % (
                    path.relative_to(REPO), line, module, attribute))
    assert missing == []

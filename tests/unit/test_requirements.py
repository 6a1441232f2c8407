"""What cs2os imports is what its requirements files declare, where needed.

``pip install cs2os`` installs requirements.txt: the ``openstack cs2os``
CLI plugin (cs2os_agent.osc) must import nothing more.  The services'
requirements are setup.cfg's extras (agent, conductor, api, all): what a
console script imports, followed through cs2os_agent's own modules
(imports inside functions too), must be in requirements.txt or its extra.
Nothing declared goes unused, and lower-constraints.txt matches the bounds
(``tox -e lower-constraints`` installs it).  Static: no process starts.
"""

import ast
import configparser
import functools
import importlib.metadata
import pathlib
import sys

import pytest

from tools import lower_constraints

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGE = "cs2os_agent"

# Which extra each console script needs; a script not named here (a new
# one) must be covered by "all" until it is given its own.
SCRIPT_EXTRAS = {
    "cs2os-agent": "agent",
    "cs2os-conductor": "conductor",
    "cs2os-manage": "conductor",
    "cs2os-api": "api",
}
# Modules that are entry points without a console script.
MODULE_EXTRAS = {
    "cs2os_agent.wsgi.api": "api",   # cs2os-api under uwsgi / mod_wsgi
}

# Declared but imported by nobody, and why.
NOT_IMPORTED = {
    "pymysql": "SQLAlchemy loads it for mysql+pymysql:// URLs",
}


@functools.cache
def _modules():
    """{dotted name: path} of every module of the package."""
    mods = {}
    for path in (ROOT / PACKAGE).rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    return mods


def _optional(tree):
    """Nodes inside a ``try`` whose ``except`` names ImportError: such an
    import may fail (the CLI without the services' requirements)."""
    inside = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
                isinstance(n, ast.Name) and n.id in (
                    "ImportError", "ModuleNotFoundError")
                for handler in node.handlers if handler.type
                for n in ast.walk(handler.type)):
            inside.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    return inside


@functools.cache
def _imports(name):
    """{(module name, optional)} of what ``name`` imports, anywhere in it."""
    path = _modules()[name]
    package = name.split(".")
    if path.name != "__init__.py":
        package.pop()
    tree = ast.parse(path.read_text(), str(path))
    optional = _optional(tree)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                module = ".".join(base + [node.module or ""]).rstrip(".")
            else:
                module = node.module
            # "from pkg import mod" imports a module too
            names = [module] + [module + "." + alias.name
                                for alias in node.names]
        else:
            continue
        found.update((n, id(node) in optional) for n in names)
    return frozenset(found)


def _closure(starts):
    """(own modules reached, top-level names of third-party imports, and
    of those only imported in a try/except ImportError)."""
    mods = _modules()
    seen, third, optional, todo = set(), set(), set(), list(starts)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        # a module's packages run first
        parents = [".".join(name.split(".")[:i])
                   for i in range(1, name.count(".") + 1)]
        todo.extend(p for p in parents if p in mods and p not in seen)
        for imported, may_fail in _imports(name):
            top = imported.split(".")[0]
            if top == PACKAGE:
                todo.extend(m for m in (imported, imported.rpartition(".")[0])
                            if m in mods and m not in seen)
            elif top not in sys.stdlib_module_names:
                (optional if may_fail else third).add(top)
    return seen, third, optional - third


@functools.cache
def _provided_by():
    return importlib.metadata.packages_distributions()


def _distributions(tops):
    """{import name: {canonical distribution names providing it}}."""
    out = {}
    for top in sorted(tops):
        dists = _provided_by().get(top)
        assert dists, ("%s is imported but not installed: no distribution "
                       "provides it" % top)
        out[top] = {lower_constraints.canonical(d) for d in dists}
    return out


@functools.cache
def _declared(group):
    """Canonical names that group ('' = install_requires) installs."""
    groups = lower_constraints.requirement_files(str(ROOT))
    files = groups[""] + (groups[group] if group else [])
    return frozenset(
        lower_constraints.canonical(name)
        for fname in files
        for name, _extras, _spec, _lower in lower_constraints.parse_file(
            str(ROOT / fname)))


def _undeclared(tops, group):
    declared = _declared(group)
    return {top: sorted(dists)
            for top, dists in _distributions(tops).items()
            if not dists & declared}


def _entry_points():
    cfg = configparser.RawConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return {group: dict(line.split("=", 1) for line in
                        cfg.get("options.entry_points", group).splitlines()
                        if line.strip())
            for group in cfg.options("options.entry_points")}


def _services():
    scripts = _entry_points()["console_scripts"]
    cases = [(script.strip(), target.split(":")[0].strip(),
              SCRIPT_EXTRAS.get(script.strip(), "all"))
             for script, target in sorted(scripts.items())]
    cases += [(module, module, extra)
              for module, extra in sorted(MODULE_EXTRAS.items())]
    return cases


def test_lower_constraints_match_the_requirements_files():
    wanted = lower_constraints.render(str(ROOT))
    have = (ROOT / lower_constraints.OUTPUT).read_text()
    assert have == wanted, (
        "lower-constraints.txt is stale: python tools/lower_constraints.py "
        "--write")


def test_extras_are_the_ones_the_docs_name():
    groups = lower_constraints.requirement_files(str(ROOT))
    assert set(groups) == {"", "agent", "conductor", "api", "all"}
    assert set(groups["all"]) == {
        f for extra in ("agent", "conductor", "api") for f in groups[extra]}


def test_every_import_is_declared():
    _seen, third, optional = _closure(_modules())
    assert _undeclared(third | optional, "all") == {}


def test_every_requirement_is_imported():
    _seen, third, optional = _closure(_modules())
    imported = set().union(*_distributions(third | optional).values())
    unused = _declared("all") - imported - set(NOT_IMPORTED)
    assert unused == set(), (
        "declared in the requirements files but imported by nothing in "
        "cs2os_agent (remove it, or say in NOT_IMPORTED why it stays)")


def test_the_cli_needs_nothing_but_requirements_txt():
    """`pip install cs2os` (no extra) is enough for `openstack cs2os`."""
    entry = _entry_points()
    starts = [m for m in _modules() if m.startswith(PACKAGE + ".osc")]
    starts += [target.split(":")[0].strip()
               for group, targets in entry.items()
               if group.startswith("openstack.")
               for target in targets.values()]
    seen, third, _maybe = _closure(starts)
    assert _undeclared(third, "") == {}
    assert not {m for m in seen
                if m.split(".")[1:2] in (["db"], ["agent"], ["conductor"],
                                         ["api"], ["sourcehost"])}, (
        "the CLI reaches server-side modules")
    # And requirements.txt holds nothing the CLI does not import.
    cli = set().union(*_distributions(third).values())
    assert set(_declared("")) - cli == set()


@pytest.mark.parametrize("entry,module,extra", _services(),
                         ids=[case[0] for case in _services()])
def test_each_service_needs_only_its_extra(entry, module, extra):
    assert module in _modules(), "%s: no module %s" % (entry, module)
    _seen, third, _maybe = _closure([module])
    assert _undeclared(third, extra) == {}, (
        "%s imports these, which neither requirements.txt nor the %r "
        "extra declares" % (entry, extra))

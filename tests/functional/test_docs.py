"""The Sphinx documentation: the real sphinx-build on this tree with
warnings as errors (what ``tox -e docs`` runs), the pages hold what the code
holds, so they cannot drift apart, and the README, the quick start, links
every feature area to an existing guide section.

reno reads the release notes from git history, and notes not yet committed
are not in it; so the build runs on a snapshot of the work tree (its
tracked and new files, not the ignored ones) committed into a fresh git
repository in a temporary directory.
"""

import html
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml
from oslo_config import generator

from cs2os_agent.agent import rpcapi as agent_rpcapi
from cs2os_agent.api import openapi
from cs2os_agent.conductor import rpcapi as conductor_rpcapi

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
CONFIG_GENERATOR = os.path.join(ROOT, "etc", "cs2os",
                                "cs2os-config-generator.conf")
NOTES = os.path.join("releasenotes", "notes")
_GIT_ID = ["-c", "user.name=cs2os tests", "-c", "user.email=tests@cs2os"]


def _git(cwd, *args):
    return subprocess.run(["git", *_GIT_ID, *args], cwd=cwd, check=True,
                          capture_output=True, text=True).stdout


def _snapshot(dest):
    """The work tree's files, committed into a new repository at dest."""
    listed = _git(ROOT, "ls-files", "-z", "--cached", "--others",
                  "--exclude-standard").split("\0")
    for name in filter(None, listed):
        src = os.path.join(ROOT, name)
        if not os.path.isfile(src):
            continue        # deleted in the work tree, still in the index
        os.makedirs(os.path.join(dest, os.path.dirname(name)), exist_ok=True)
        shutil.copy2(src, os.path.join(dest, name), follow_symlinks=False)
    _git(dest, "init", "-q", "-b", "main")
    _git(dest, "add", "-A")
    _git(dest, "commit", "-q", "-m", "snapshot for the docs build")


def _build(tree, out):
    return subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html",
         os.path.join(tree, "doc", "source"), out],
        cwd=tree, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("docs-tree"))
    _snapshot(path)
    return path


@pytest.fixture(scope="module")
def site(tree, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("docs-html"))
    proc = _build(tree, out)
    assert proc.returncode == 0, (
        "sphinx-build -W failed:\n" + proc.stdout[-3000:] + proc.stderr)
    assert "WARNING" not in proc.stderr, proc.stderr
    return out


def _page(site, name):
    with open(os.path.join(site, name + ".html"), encoding="utf-8") as f:
        text = re.sub(r"<[^>]+>", " ", f.read())
    return re.sub(r"\s+", " ", html.unescape(text))


def _words(text):
    """Text as its words alone: markup (inline literals) leaves spaces and
    marks that the source does not have."""
    return " ".join(re.findall(r"\w+", text))


def test_configuration_reference_lists_every_group_and_real_options(site):
    with open(os.path.join(site, "configuration.html"),
              encoding="utf-8") as f:
        page = f.read()
    # oslo_config's directive makes an anchor per option: group.name.
    for anchor in ("transfer.rbd_user", "cloudstack.project_map",
                   "conductor.overlay_transport", "api.bind_port",
                   "keystone_authtoken.www_authenticate_uri"):
        assert 'id="%s"' % anchor in page, anchor
    # Every option of every namespace the generator's file lists: a
    # namespace whose library is missing would vanish without a warning.
    with open(CONFIG_GENERATOR, encoding="utf-8") as f:
        namespaces = re.findall(r"^namespace = (\S+)$", f.read(), re.M)
    assert {"cs2os", "keystonemiddleware.auth_token"} <= set(namespaces)
    for namespace, groups in generator._list_opts(namespaces):
        assert groups, namespace
        for group, opts in groups:
            group = getattr(group, "name", group) or "DEFAULT"
            for opt in opts:
                assert ('id="%s.%s"' % (group, opt.name) in page
                        or 'id="%s.%s"' % (group, opt.dest) in page), (
                    namespace, group, opt.name)
    sample = _page(site, "sample-config")
    assert "[transfer]" in sample and "#rbd_user = cs2os" in sample


def test_policy_reference_lists_the_rules_with_their_defaults(site):
    page = _page(site, "policy")
    # The rule, then its default check string as policies.py sets it.
    assert re.search(r"cs2os:migration:list Default ?: rule:admin_api or "
                     r"\(role:reader and project_id:%\(project_id\)s\)",
                     page), page[:2000]
    assert "cs2os:migration:create" in page
    assert "cs2os:migration:list:all_projects" in _page(site,
                                                        "sample-policy")


def test_api_reference_has_every_operation_the_api_serves(site):
    page = _page(site, "api")
    with open(os.path.join(site, "api.html"), encoding="utf-8") as f:
        markup = f.read()
    doc = openapi.document()
    operations = [(m.upper(), p) for p, ops in doc["paths"].items()
                  for m in ops if m in ("get", "post", "put", "delete")]
    assert ("GET", "/v1/plans") in operations
    for method, path in operations:
        op = doc["paths"][path][method.lower()]
        assert "%s %s" % (method, path) in page, (method, path)
        assert "operation %s" % op["operationId"] in page
    for name in doc["components"]["schemas"]:
        assert 'id="%s"' % name.lower() in markup, name


GUIDES = ("install", "operator", "testing")
SOURCE = os.path.join(ROOT, "doc", "source")
_LINK = re.compile(r"\]\(doc/source/(\w+)\.md#([\w-]+)\)")


def _read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def _headings(text, levels="#{2,3}"):
    """The headings of a Markdown text, outside fenced blocks."""
    found, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"(%s) " % levels, line):
            found.append(line.split(" ", 1)[1].strip())
    return found


def _anchor(heading):
    """GitHub's anchor of a heading (and MyST's, with
    myst_heading_anchors): lower case, punctuation gone, spaces dashes."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def test_every_page_is_in_a_toctree():
    index = _read(os.path.join(SOURCE, "index.md"))
    listed = set()
    for block in re.findall(r"```\{toctree\}\n(.*?)```", index, re.S):
        listed.update(line.strip() for line in block.splitlines()
                      if line.strip() and not line.startswith(":"))
    pages = {os.path.splitext(name)[0] for name in os.listdir(SOURCE)
             if name.endswith((".md", ".rst"))} - {"index"}
    assert set(GUIDES) <= pages
    assert pages == listed, (pages ^ listed)


def test_every_guide_section_is_on_its_page(site):
    for guide in GUIDES:
        headings = _headings(_read(os.path.join(SOURCE, guide + ".md")))
        assert len(headings) >= 2, guide
        with open(os.path.join(site, guide + ".html"),
                  encoding="utf-8") as f:
            markup = f.read()
        for heading in headings:
            assert 'id="%s"' % _anchor(heading) in markup, (guide, heading)
    assert "cs2os-status upgrade check" in _page(site, "install")
    # The README's parts the pages show as they are.
    assert "tools/sandbox.sh up" in _page(site, "index")
    assert "cs2os transfer benchmark" in _page(site, "testing")


def test_readme_is_the_quick_start_linking_every_guide_section():
    readme = _read(os.path.join(ROOT, "README.md"))
    # It starts with the two commands, then the sandbox's transcript.
    first_block = readme.split("```")[1]
    assert "tools/sandbox.sh up" in first_block
    assert "bash .ci/run" in first_block
    assert "openstack cs2os import web-1" in readme.split("## Status")[0]
    assert len(readme.splitlines()) < 350
    links = _LINK.findall(readme)
    for guide, anchor in links:
        anchors = {_anchor(h) for h in _headings(
            _read(os.path.join(SOURCE, guide + ".md")), "#{2,4}")}
        assert anchor in anchors, (guide, anchor, sorted(anchors))
    # Every feature area of the guides has its paragraph in the README.
    for guide in ("operator", "install"):
        for heading in _headings(_read(os.path.join(SOURCE, guide + ".md")),
                                 "##"):
            assert (guide, _anchor(heading)) in links, (guide, heading)
    # And every paragraph of the feature list links to its section.
    features = readme.split("## What an operator gets")[1].split("\n## ")[0]
    paragraphs = [p for p in features.split("\n\n") if p.startswith("**")]
    assert len(paragraphs) >= 10
    for paragraph in paragraphs:
        assert _LINK.search(paragraph), paragraph[:80]


def test_rpc_and_notification_pages_come_from_the_modules(site):
    page = _page(site, "rpc")
    for api in (agent_rpcapi.AgentAPI, conductor_rpcapi.ConductorAPI):
        for name in vars(api):
            if not name.startswith("_"):
                assert name in page, name
    assert "API version history" in page
    assert "MigrationPayload 1.2" in _page(site, "notifications")


def test_release_notes_show_every_note(site, tree):
    page = _words(_page(site, "releasenotes"))
    notes = sorted(os.listdir(os.path.join(tree, NOTES)))
    assert len(notes) >= 5
    for name in notes:
        with open(os.path.join(tree, NOTES, name), encoding="utf-8") as f:
            note = yaml.safe_load(f)
        for section, entries in note.items():
            entries = [entries] if isinstance(entries, str) else entries
            for entry in entries:
                words = " ".join(_words(entry).split()[:8])
                assert words in page, (name, section, words)


def test_a_warning_fails_the_build(tree, tmp_path):
    broken = str(tmp_path / "tree")
    shutil.copytree(tree, broken, symlinks=True)
    with open(os.path.join(broken, "doc", "source", "operator.md"), "a",
              encoding="utf-8") as f:
        f.write("\nSee {doc}`no-such-page`.\n")
    proc = _build(broken, str(tmp_path / "html"))
    assert proc.returncode != 0
    assert "operator.md" in proc.stderr and "no-such-page" in proc.stderr

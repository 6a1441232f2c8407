"""Sphinx configuration of the cs2os documentation (``tox -e docs``).

Every page takes its text from where it is kept: the guides are written
here (doc/source/*.md); the quick start and the performance figures from
README.md (between ``<!-- docs:NAME:start -->`` / ``<!-- docs:NAME:end -->``
markers: the team reads them there), the configuration and policy references from the options and rules the code
registers (through their entry points), the API reference from the OpenAPI
document cs2os-api serves, the RPC and notification pages from the modules'
docstrings, the release notes from releasenotes/notes (reno, git history).
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
# The local extensions (the OpenAPI renderer); the package itself is
# installed into the docs env (the entry points need it), ROOT comes
# second so a checkout without it still finds the modules.
sys.path.insert(0, os.path.join(HERE, "_exts"))
sys.path.insert(1, ROOT)
# The configuration reference reads etc/cs2os/cs2os-config-generator.conf by
# a path relative to the working directory, and reno finds the git
# repository from it: build from the repository's root wherever
# sphinx-build was started (Sphinx has made its own paths absolute by now).
os.chdir(ROOT)

project = "cs2os"
copyright = "cs2os contributors, Apache License 2.0"
author = "cs2os contributors"

extensions = [
    "sphinx.ext.autodoc",
    "myst_parser",
    "oslo_config.sphinxext",
    "oslo_config.sphinxconfiggen",
    "oslo_policy.sphinxext",
    "oslo_policy.sphinxpolicygen",
    "reno.sphinxext",
    "cs2os_openapi",
    "cs2os_known_warnings",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
master_doc = "index"
exclude_patterns = ["_build"]
# The README's fenced blocks are console transcripts and ini snippets with
# comments Pygments' strict lexers reject; highlight only what says so.
highlight_language = "none"
# The README links to guide sections by GitHub's anchors
# (operator.md#the-agent); give the HTML headings the same ids.
myst_heading_anchors = 3

# The samples are generated at build time into _static (doc/.gitignore
# keeps them out of git), so the pages link to what the code registers now,
# never to a stale copy.
config_generator_config_file = os.path.join(
    ROOT, "etc", "cs2os", "cs2os-config-generator.conf")
sample_config_basename = "_static/cs2os"
policy_generator_config_file = os.path.join(
    ROOT, "etc", "cs2os", "cs2os-policy-generator.conf")
sample_policy_basename = "_static/cs2os"

# reno reads the notes from the repository's git history (and the work
# tree), so the release notes need a git checkout: CI's clean clone is one.
reno_config = {}

html_theme = "alabaster"
html_title = "cs2os documentation"

autodoc_member_order = "bysource"
smartquotes = False  # straight quotes: commands and options copy as written

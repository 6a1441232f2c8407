"""Sphinx directive ``.. cs2os-openapi::``: the REST API reference.

It renders the very document cs2os-api serves at GET /v1/openapi.json
(``cs2os_agent.api.openapi.document()``, built from the schemas the handlers
validate with), so the reference cannot drift from the code: one section
per operation (its parameters, request body and responses, as tables and as
the JSON schema itself), then the shared schemas.

The nodes are built directly rather than as reStructuredText text, so no
character in a description or a pattern can be misread as markup.
"""

import json

from docutils import nodes
from sphinx.util.docutils import SphinxDirective

_METHODS = ("get", "put", "post", "patch", "delete")
_REF_PREFIX = "#/components/"
# The microversion an operation, parameter or field first appears in
# (cs2os_agent.api.openapi marks them); unmarked means the first, 1.0.
_SINCE = "x-cs2os-min-version"
_FIRST_VERSION = "1.0"


def _since(item):
    return item.get(_SINCE, _FIRST_VERSION)


def _ref_name(ref):
    if not ref.startswith(_REF_PREFIX):
        raise ValueError("unsupported $ref %r: only %s... refs are rendered"
                         % (ref, _REF_PREFIX))
    return ref.rsplit("/", 1)[1]


def _type_text(schema):
    """A one-line account of a schema: type, format, choices, limits."""
    if "$ref" in schema:
        return "%s (schema below)" % _ref_name(schema["$ref"])
    for key, joiner in (("anyOf", " or "), ("oneOf", " or ")):
        if key in schema and "type" not in schema:
            text = joiner.join(_type_text(s) for s in schema[key])
            return text + (", or null" if schema.get("nullable") else "")
    kind = schema.get("type", "any")
    if kind == "array" and isinstance(schema.get("items"), dict):
        text = "array of " + _type_text(schema["items"])
    elif kind == "object" and isinstance(
            schema.get("additionalProperties"), dict):
        text = "object of " + _type_text(schema["additionalProperties"])
    else:
        text = kind
    if "format" in schema:
        text += " (%s)" % schema["format"]
    if "enum" in schema:
        text += ", one of: " + ", ".join(json.dumps(v) for v in schema["enum"])
    if "description" not in schema:
        # A described schema says its limits in words; else list them.
        limits = [("minLength", "at least %s characters"),
                  ("maxLength", "at most %s characters"),
                  ("minimum", "at least %s"), ("maximum", "at most %s"),
                  ("minItems", "at least %s items"),
                  ("maxItems", "at most %s items"),
                  ("pattern", "matching %s")]
        text += "".join(", " + words % schema[key]
                        for key, words in limits if key in schema)
    if schema.get("nullable"):
        text += ", or null"
    return text


def _property_rows(schema, prefix=""):
    """(name, type, required, since, description) for every property,
    depth first;
    ``a.b`` is b inside object a, ``a[].b`` b inside a's items."""
    rows = []
    required = set(schema.get("required", ()))
    for name, prop in schema.get("properties", {}).items():
        full = prefix + name
        rows.append((full, _type_text(prop),
                     "yes" if name in required else "no", _since(prop),
                     prop.get("description", "")))
        if "properties" in prop:
            rows.extend(_property_rows(prop, full + "."))
        items = prop.get("items")
        if isinstance(items, dict) and "properties" in items:
            rows.extend(_property_rows(items, full + "[]."))
    return rows


def _rules(schema):
    """The described cross-field rules (allOf/anyOf/oneOf at this level)."""
    return [s["description"] for key in ("allOf", "anyOf", "oneOf")
            for s in schema.get(key, ()) if "description" in s]


def _para(text):
    return nodes.paragraph(text, text)


def _table(headers, rows):
    table = nodes.table()
    group = nodes.tgroup(cols=len(headers))
    table += group
    for _ in headers:
        group += nodes.colspec(colwidth=1)
    head = nodes.thead()
    group += head
    body = nodes.tbody()
    group += body
    for parent, cells in [(head, headers)] + [(body, r) for r in rows]:
        row = nodes.row()
        for cell in cells:
            entry = nodes.entry()
            entry += _para(str(cell))
            row += entry
        parent += row
    return table


def _schema_block(schema):
    text = json.dumps(schema, indent=2, sort_keys=True)
    block = nodes.literal_block(text, text)
    block["language"] = "json"
    return block


class OpenAPIDirective(SphinxDirective):
    has_content = False

    def run(self):
        # Imported here: a docs build without the package fails on this
        # directive, naming the import, not on the whole configuration.
        from cs2os_agent.api import openapi

        doc = openapi.document()
        self.components = doc.get("components", {})
        out = [_para(doc["info"]["description"])]
        for path, operations in doc["paths"].items():
            for method in _METHODS:
                if method in operations:
                    out.append(self._operation(method, path,
                                               operations[method]))
        out.append(self._schemas())
        return out

    def _section(self, title):
        section = nodes.section()
        section += nodes.title(title, title)
        section["names"].append(nodes.fully_normalize_name(title))
        self.state.document.note_implicit_target(section, section)
        return section

    def _operation(self, method, path, op):
        section = self._section("%s %s" % (method.upper(), path))
        section += _para("%s (operation %s)." % (op["summary"],
                                                 op["operationId"]))
        if "description" in op:
            section += _para(op["description"])
        if _SINCE in op:
            section += _para("Since microversion %s (OpenStack-API-Version: "
                             "cs2os %s or later)." % (op[_SINCE], op[_SINCE]))
        if "security" in op and not op["security"]:
            section += _para("No token needed.")
        if op.get("parameters"):
            section += nodes.rubric("", "Parameters")
            section += _table(
                ("Name", "In", "Required", "Since", "Type", "Description"),
                [(p["name"], p["in"], "yes" if p.get("required") else "no",
                  p.get(_SINCE) or _since(p["schema"]),
                  _type_text(p["schema"]),
                  p.get("description") or p["schema"].get("description", ""))
                 for p in op["parameters"]])
        if "requestBody" in op:
            section += nodes.rubric("", "Request body")
            section.extend(self._body(op["requestBody"]))
        section += nodes.rubric("", "Responses")
        section += _table(("Status", "Meaning", "Body"), [
            (status,) + self._response(resp)
            for status, resp in sorted(op["responses"].items())])
        return section

    def _body(self, body):
        schema = body["content"]["application/json"]["schema"]
        out = []
        rows = _property_rows(schema)
        if rows:
            out.append(_table(
                ("Field", "Type", "Required", "Since", "Description"), rows))
        for rule in _rules(schema) + [
                r for prop in schema.get("properties", {}).values()
                for r in _rules(prop)]:
            out.append(_para("Rule: " + rule))
        out.append(_schema_block(schema))
        return out

    def _response(self, resp):
        if "$ref" in resp:
            resp = self.components["responses"][_ref_name(resp["$ref"])]
        content = resp.get("content", {}).get("application/json")
        body = _type_text(content["schema"]) if content else "none"
        return resp["description"], body

    def _schemas(self):
        section = self._section("Schemas")
        section += _para("The objects the responses above refer to.")
        for name, schema in self.components.get("schemas", {}).items():
            sub = self._section(name)
            rows = _property_rows(schema)
            if rows:
                sub += _table(
                    ("Field", "Type", "Always", "Since", "Description"), rows)
            sub += _schema_block(schema)
            section += sub
        return section


def setup(app):
    app.add_directive("cs2os-openapi", OpenAPIDirective)
    return {"parallel_read_safe": True, "parallel_write_safe": True}

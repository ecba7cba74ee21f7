"""A validator for the subset of JSON Schema (draft 2020-12) that the process protocol's schema uses.

The schema (``docs/process-protocol.schema.json``) is standard JSON Schema, so a port author can
check their messages with any validator; the suite checks every message against the same file with
this one, which needs no dependency.  It knows the keywords in :data:`KEYWORDS` and refuses a schema
that uses any other (:func:`unknown_keywords`), so an edit of the schema cannot be silently ignored.

For ``oneOf`` over objects that name their kind in a ``type`` property (``{"const": "result"}``), a
message is checked against the branch of its own kind, so the error says what is wrong with it
rather than that it matches none of six branches.
"""

from __future__ import annotations

import math
from typing import Any, Optional

__all__ = ["KEYWORDS", "SchemaViolation", "unknown_keywords", "validate"]

#: The keywords this validator implements; annotations (title, description, $schema, $id) are ignored.
KEYWORDS = frozenset({"type", "properties", "required", "additionalProperties", "items", "enum", "const",
                      "minimum", "minLength", "minItems", "uniqueItems", "$ref", "oneOf", "$defs"})
_ANNOTATIONS = frozenset({"title", "description", "$schema", "$id"})

_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool))
    or (isinstance(v, float) and math.isfinite(v) and v.is_integer()),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


class SchemaViolation(ValueError):
    """A message that the schema rejects; the message names the place (``message.capabilities.dtypes[0]``)."""


def unknown_keywords(schema: Any, where: str = "schema") -> list[str]:
    """Places in ``schema`` that use a keyword this validator does not implement."""
    found: list[str] = []
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key not in KEYWORDS and key not in _ANNOTATIONS:
                found.append(f"{where}.{key}")
            if key in ("properties", "$defs"):
                for name, sub in value.items():
                    found += unknown_keywords(sub, f"{where}.{key}.{name}")
            elif key in ("items", "additionalProperties") and isinstance(value, dict):
                found += unknown_keywords(value, f"{where}.{key}")
            elif key == "oneOf":
                for index, sub in enumerate(value):
                    found += unknown_keywords(sub, f"{where}.oneOf[{index}]")
    return found


def validate(instance: Any, schema: dict, root: Optional[dict] = None, where: str = "message") -> None:
    """Raise :class:`SchemaViolation` unless ``instance`` satisfies ``schema`` (``root`` resolves ``$ref``)."""
    root = schema if root is None else root
    if "$ref" in schema:
        validate(instance, _resolve(schema["$ref"], root), root, where)
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_TYPES[t](instance) for t in types):
            raise SchemaViolation(f"{where}: {_show(instance)} is not of type {' or '.join(types)}")
    if "const" in schema and not _equal(instance, schema["const"]):
        raise SchemaViolation(f"{where}: {_show(instance)} is not {_show(schema['const'])}")
    if "enum" in schema and not any(_equal(instance, option) for option in schema["enum"]):
        raise SchemaViolation(f"{where}: {_show(instance)} is not one of {', '.join(map(_show, schema['enum']))}")
    if "minimum" in schema and _TYPES["number"](instance) and instance < schema["minimum"]:
        raise SchemaViolation(f"{where}: {instance} is less than the minimum {schema['minimum']}")
    if "minLength" in schema and isinstance(instance, str) and len(instance) < schema["minLength"]:
        raise SchemaViolation(f"{where}: {_show(instance)} is shorter than {schema['minLength']} character(s)")
    if isinstance(instance, list):
        _validate_list(instance, schema, root, where)
    if isinstance(instance, dict):
        _validate_object(instance, schema, root, where)
    if "oneOf" in schema:
        _validate_one_of(instance, schema["oneOf"], root, where)


def _validate_list(instance: list, schema: dict, root: dict, where: str) -> None:
    if "minItems" in schema and len(instance) < schema["minItems"]:
        raise SchemaViolation(f"{where}: has {len(instance)} item(s), fewer than {schema['minItems']}")
    if schema.get("uniqueItems"):
        for index, item in enumerate(instance):
            if any(_equal(item, earlier) for earlier in instance[:index]):
                raise SchemaViolation(f"{where}[{index}]: {_show(item)} appears twice")
    if "items" in schema:
        for index, item in enumerate(instance):
            validate(item, schema["items"], root, f"{where}[{index}]")


def _validate_object(instance: dict, schema: dict, root: dict, where: str) -> None:
    missing = [name for name in schema.get("required", []) if name not in instance]
    if missing:
        raise SchemaViolation(f"{where}: missing required field(s) {', '.join(map(repr, missing))}")
    properties = schema.get("properties", {})
    for name, value in instance.items():
        if name in properties:
            validate(value, properties[name], root, f"{where}.{name}")
        elif schema.get("additionalProperties") is False:
            raise SchemaViolation(f"{where}: unknown field {name!r} (known: {', '.join(map(repr, properties))})")
        elif isinstance(schema.get("additionalProperties"), dict):
            validate(value, schema["additionalProperties"], root, f"{where}.{name}")


def _validate_one_of(instance: Any, branches: list, root: dict, where: str) -> None:
    kind = instance.get("type") if isinstance(instance, dict) else None
    if isinstance(kind, str):
        own = [b for b in branches if _kind(b, root) == kind]
        if len(own) == 1:
            validate(instance, own[0], root, where)
            return
        if all(_kind(b, root) is not None for b in branches):
            kinds = [_kind(b, root) for b in branches]
            raise SchemaViolation(f"{where}: type {kind!r} is not one of {', '.join(map(repr, kinds))}")
    reasons, matched = [], 0
    for branch in branches:
        try:
            validate(instance, branch, root, where)
            matched += 1
        except SchemaViolation as exc:
            reasons.append(str(exc))
    if matched != 1:
        detail = "matches more than one of" if matched else "matches none of"
        raise SchemaViolation(f"{where}: {_show(instance)} {detail} the allowed forms"
                              + ("" if matched else f" ({'; '.join(reasons)})"))


def _kind(branch: dict, root: dict) -> Optional[str]:
    """The ``type`` constant a branch (after ``$ref``) requires, if any."""
    while "$ref" in branch:
        branch = _resolve(branch["$ref"], root)
    const = branch.get("properties", {}).get("type", {})
    return const.get("const") if isinstance(const, dict) else None


def _resolve(ref: str, root: dict) -> dict:
    if not ref.startswith("#/"):
        raise SchemaViolation(f"schema: only local references (#/...) are supported, got {ref!r}")
    node: Any = root
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def _equal(a: Any, b: Any) -> bool:
    """JSON equality: booleans are not numbers."""
    return type(a) is type(b) and a == b if isinstance(a, bool) or isinstance(b, bool) else a == b


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."

"""What a config or rule key takes, as a small vocabulary of types that each know their JSON
Schema; keys.py describes every key with them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from relayhook.text.units import DURATION_PATTERN, SIZE_PATTERN

__all__ = [
    "ByKey",
    "Duration",
    "Either",
    "Flag",
    "Key",
    "ListOf",
    "MapOf",
    "Section",
    "Size",
    "Text",
    "Type",
    "Whole",
    "Words",
    "anycase",
    "one_or_list",
]

Schema = dict[str, Any]


class Type:
    """What a key takes, as a JSON Schema fragment."""

    def schema(self, env: bool) -> Schema:
        raise NotImplementedError

    # A value that can only be a scalar may also be a ${VAR} reference in the config file,
    # which the loader expands before reading it.
    scalar = True


# ${VAR} or ${VAR:-default} somewhere in a string (yamlnodes expands the same form).
ENV_PATTERN = r"\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}"


def _or_env(schema: Schema, env: bool) -> Schema:
    if not env:
        return schema
    return {"anyOf": [schema, {"type": "string", "pattern": ENV_PATTERN}]}


@dataclass(frozen=True)
class Text(Type):
    """A string; numbers too where the loader reads them as text (Reader.string)."""

    numbers: bool = False
    pattern: str | None = None

    def schema(self, env: bool) -> Schema:
        s: Schema = {"type": ["string", "number"] if self.numbers else "string"}
        if self.pattern:
            s["pattern"] = self.pattern
            return _or_env(s, env)
        return s  # any string, a ${VAR} included


@dataclass(frozen=True)
class Whole(Type):
    """A whole number (a string of digits too, as the loader reads them)."""

    minimum: int | None = None
    maximum: int | None = None

    def schema(self, env: bool) -> Schema:
        number: Schema = {"type": "integer"}
        if self.minimum is not None:
            number["minimum"] = self.minimum
        if self.maximum is not None:
            number["maximum"] = self.maximum
        digits = {"type": "string", "pattern": r"^\s*[+-]?[0-9]+\s*$"}
        return _or_env({"anyOf": [number, digits]}, env)


@dataclass(frozen=True)
class Duration(Type):
    def schema(self, env: bool) -> Schema:
        text = {"type": "string", "pattern": DURATION_PATTERN}
        return _or_env({"anyOf": [{"type": "number", "minimum": 0}, text]}, env)


@dataclass(frozen=True)
class Size(Type):
    def schema(self, env: bool) -> Schema:
        text = {"type": "string", "pattern": SIZE_PATTERN}
        return _or_env({"anyOf": [{"type": "number", "minimum": 0}, text]}, env)


@dataclass(frozen=True)
class Flag(Type):
    def schema(self, env: bool) -> Schema:
        return _or_env({"type": "boolean"}, env)


@dataclass(frozen=True)
class Words(Type):
    """One of a fixed set of words."""

    values: tuple[Any, ...]

    def schema(self, env: bool) -> Schema:
        return _or_env({"enum": list(self.values)}, env)


@dataclass(frozen=True)
class Either(Type):
    """Any one of these."""

    options: tuple[Type, ...]

    def schema(self, env: bool) -> Schema:
        return {"anyOf": [o.schema(env) for o in self.options]}


@dataclass(frozen=True)
class ListOf(Type):
    item: Type
    min_items: int = 0

    def schema(self, env: bool) -> Schema:
        s: Schema = {"type": "array", "items": self.item.schema(env)}
        if self.min_items:
            s["minItems"] = self.min_items
        return s


def one_or_list(item: Type, min_items: int = 0) -> Type:
    return Either((item, ListOf(item, min_items)))


@dataclass(frozen=True)
class ByKey(Type):
    """One section when the mapping has `key`, another when it has not."""

    key: str
    present: Section
    absent: Section

    def schema(self, env: bool) -> Schema:
        return {
            "type": "object",
            "if": {"required": [self.key]},
            "then": self.present.schema(env),
            "else": self.absent.schema(env),
        }


def anycase(word: str) -> str:
    """A pattern of word in any case (JSON Schema patterns have no flags)."""
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in word)


@dataclass(frozen=True)
class MapOf(Type):
    """A mapping of names the user chooses to values of one type."""

    value: Type

    def schema(self, env: bool) -> Schema:
        return {"type": "object", "additionalProperties": self.value.schema(env)}


@dataclass(frozen=True)
class Key:
    name: str
    type: Type
    doc: str
    default: Any = None  # as a user would write it; None: no default
    required: bool = False
    # An empty value (`key:`, YAML's null) reads as the key left out.
    nullable: bool = False


@dataclass(frozen=True)
class Section(Type):
    """A mapping with a fixed set of keys; any other key is an error."""

    title: str
    keys: tuple[Key, ...]
    extra: Mapping[str, Any] = field(default_factory=dict)  # more schema (if/then, ...)

    @property
    def names(self) -> set[str]:
        return {k.name for k in self.keys}

    def __getitem__(self, name: str) -> Key:
        return next(k for k in self.keys if k.name == name)

    def schema(self, env: bool) -> Schema:
        properties: Schema = {}
        for key in self.keys:
            s = dict(key.type.schema(env))
            if key.nullable:
                s = {"anyOf": [s, {"type": "null"}]}
            s["description"] = key.doc
            if key.default is not None:
                s["default"] = key.default
            properties[key.name] = s
        out: Schema = {
            "type": "object",
            "description": self.title,
            "properties": properties,
            "additionalProperties": False,
        }
        required = [k.name for k in self.keys if k.required]
        if required:
            out["required"] = required
        out.update(self.extra)
        return out

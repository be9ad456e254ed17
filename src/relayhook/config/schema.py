"""JSON Schemas (draft 2020-12) of the config file and of rule files, made from the
catalogue of keys the loaders check (keys.py), for editors with a YAML language server."""

from __future__ import annotations

import json
from typing import Any

from relayhook.config.keys import RULE_FILE, TOP
from relayhook.config.keytypes import Section

__all__ = ["SCHEMAS", "schema_of", "schema_text"]

_DRAFT = "https://json-schema.org/draft/2020-12/schema"
# name: (catalogue, ${VAR} expanded by the loader). Rule files are read as written.
SCHEMAS: dict[str, tuple[Section, bool]] = {"config": (TOP, True), "rules": (RULE_FILE, False)}


def schema_of(name: str) -> dict[str, Any]:
    section, env = SCHEMAS[name]
    return {"$schema": _DRAFT, "title": f"relayhook {name}", **section.schema(env)}


def schema_text(name: str) -> str:
    """As `relayhook schema NAME` prints it and schema/NAME.schema.json holds it."""
    return json.dumps(schema_of(name), indent=2, ensure_ascii=False) + "\n"

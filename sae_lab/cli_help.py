"""Render a config model's fields (keys, types, defaults, descriptions) as CLI help text."""

from __future__ import annotations

import typing

from pydantic import BaseModel
from pydantic_core import PydanticUndefined


def _type_name(ann) -> str:
    origin = typing.get_origin(ann)
    if origin is typing.Literal:
        return "|".join(str(a) for a in typing.get_args(ann))
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " or ".join(_type_name(a) for a in typing.get_args(ann) if a is not type(None)) + " (or null)"
    if origin is list:
        return f"list[{', '.join(_type_name(a) for a in typing.get_args(ann))}]"
    return getattr(ann, "__name__", str(ann))


def _submodel(ann) -> type[BaseModel] | None:
    for a in (ann, *typing.get_args(ann)):
        if isinstance(a, type) and issubclass(a, BaseModel):
            return a
    return None


def config_help(model: type[BaseModel], prefix: str = "", skip: tuple[str, ...] = ()) -> list[str]:
    """One line per leaf key (except ``skip``): ``key (type, default X): description``."""
    lines = []
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        key = f"{prefix}{name}"
        sub = _submodel(field.annotation)
        if sub is not None and typing.get_origin(field.annotation) is not list:
            lines.extend(config_help(sub, key + "."))
            continue
        if field.default is PydanticUndefined and field.default_factory is None:
            default = "required"
        elif field.default_factory is not None:
            default = f"default {field.default_factory()!r}"
        else:
            default = f"default {field.default!r}"
        desc = f": {field.description}" if field.description else ""
        lines.append(f"  {key} ({_type_name(field.annotation)}, {default}){desc}")
        if sub is not None:
            lines.extend("    " + line for line in config_help(sub, f"{key}.N."))
    return lines

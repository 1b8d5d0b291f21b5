"""Shared machinery for typed, validated configs: strict models, YAML I/O, CLI overrides."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, TypeVar, get_args

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

M = TypeVar("M", bound="StrictModel")


class ConfigError(ValueError):
    """A config that cannot be used; the message names the field and what is allowed."""


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are rejected, values validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_as_number(cls, v: Any, info: ValidationInfo) -> Any:
        """`batch_size=true` is a mistake, not 1: booleans never stand in for numbers."""
        if isinstance(v, bool) and info.field_name in cls.model_fields:
            ann = cls.model_fields[info.field_name].annotation
            types = set(get_args(ann)) | {ann}
            if (types & {int, float}) and bool not in types:
                raise ValueError(f"expected a number, got the boolean {v!r}")
        return v


def format_validation_error(err: ValidationError, model: type[BaseModel], where: str = "") -> str:
    """Turn a pydantic error into lines that name each field, the problem, and the allowed values."""
    lines = [f"invalid config{(' in ' + where) if where else ''}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            known = _known_fields(model, e["loc"][:-1])
            hint = difflib.get_close_matches(str(e["loc"][-1]), known, n=1)
            extra = f" Did you mean '{hint[0]}'?" if hint else ""
            lines.append(f"  - unknown key '{loc}'.{extra} Known keys here: {', '.join(sorted(known))}")
        elif e["type"] == "value_error":  # our own checks: the message names the fields and what is allowed
            lines.append(f"  - {loc + ': ' if loc else ''}{e['msg'].removeprefix('Value error, ')}")
        else:
            lines.append(f"  - {loc}: {e['msg']} (got {e.get('input')!r})")
    return "\n".join(lines)


def _known_fields(model: type[BaseModel], loc: tuple) -> list[str]:
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        args = getattr(ann, "__args__", ()) or (ann,)
        current = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if current is None:
            return []
    return list(getattr(current, "model_fields", {}).keys())


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b.c=value`` into (["a", "b", "c"], value), the value read as YAML (``a.b+=value``: see
    :func:`apply_overrides`)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key.subkey=value (or list+=item)")
    key, raw = text.split("=", 1)
    key = key.removesuffix("+")
    if not key.strip():
        raise ConfigError(f"override '{text}' has an empty key")
    return key.strip().split("."), yaml.safe_load(raw) if raw != "" else ""


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply overrides to a nested dict: ``key.path=value`` sets (list items by index; the index one past the end
    adds an item), ``key.path+=item`` appends to a list (``+=[a, b]`` extends it by several)."""
    for text in overrides:
        path, value = parse_override(text)
        node: Any = data
        for part in path[:-1]:
            if isinstance(node, list):
                node = node[_list_index(part, node, text)]
            else:
                node = node.setdefault(part, {})
        last = path[-1]
        if text.split("=", 1)[0].endswith("+"):
            _append(node, last, value, text)
        elif isinstance(node, list):
            index = _list_index(last, node, text, extend=True)
            node[index : index + 1] = [value]
        else:
            node[last] = value
    return data


def _append(node: Any, key: str, value: Any, text: str) -> None:
    """``key+=value``: append ``value`` (a list: its items) to the list at ``node[key]`` (created if absent)."""
    target = node[_list_index(key, node, text)] if isinstance(node, list) else node.setdefault(key, [])
    if not isinstance(target, list):
        raise ConfigError(
            f"override '{text}': '{key}' holds {type(target).__name__} {target!r}, not a list; "
            f"'+=' appends to a list (set a value with {key}=...)"
        )
    target.extend(value if isinstance(value, list) else [value])


def _list_index(part: str, node: list, text: str, extend: bool = False) -> int:
    """The list index ``part`` names (negative counts from the end); ``extend``: one past the end adds an item."""
    try:
        idx = int(part)
        if not (extend and idx == len(node)):
            node[idx]
        return idx if idx >= 0 else len(node) + idx
    except (ValueError, IndexError):
        top = len(node) if extend else len(node) - 1
        raise ConfigError(
            f"override '{text}': '{part}' is not a valid index into a list of {len(node)} "
            f"(0 to {top}{', the last adds an item' if extend else ''}; or append with +=)"
        ) from None


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping with a clear error for a missing or malformed file."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"config file '{p}' is a directory; pass the path to a YAML config file")
    if not p.is_file():
        raise ConfigError(f"config file '{p}' does not exist; pass the path to a YAML config")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file '{p}' is not valid YAML: {e}") from None
    except (UnicodeDecodeError, OSError) as e:
        raise ConfigError(f"config file '{p}' cannot be read as UTF-8 text: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{p}' must hold a mapping at the top level")
    return data


def build_config(model: type[M], data: dict, where: str = "") -> M:
    """Validate a dict into a config model, raising ConfigError with readable messages. A model that picks a
    subclass from the data (``config_class_for``, e.g. SAEConfig by architecture) validates into that one."""
    if hasattr(model, "config_class_for"):
        model = model.config_class_for(data)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, model, where)) from None


def load_config(model: type[M], path: str | Path | None = None, overrides: list[str] | None = None) -> M:
    """Load a config from YAML (optional) plus ``key=value`` overrides and validate it."""
    data = load_yaml(path) if path is not None else {}
    data = apply_overrides(data, overrides or [])
    return build_config(model, data, str(path) if path else "")


def dump_yaml(cfg: BaseModel) -> str:
    """The resolved config as YAML text."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)

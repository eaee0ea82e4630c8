"""Kiosk configuration: TOML file, then ``EDGEFER_<SECTION>_<KEY>`` environment variables,
then command-line flags (each overrides the one before).

The file is not a schema of its own: every table is one of the option dataclasses the CLI and
the library use (``LiveOptions`` and what it nests: ``[capture]`` is ``CaptureOptions``,
``[recognizer]``, ``[detector]``, ``[tracker]``, ``[smoothing]``, ``[llm]`` is ``LlmConfig``,
``[display]``, ``[outputs]``, ``[http]``), found by walking the dataclasses, with keys named
like their fields and values checked against their types. An option added to a dataclass is
configurable here with no change to this module. Unknown names and wrong types are rejected at
start with the key named; the dataclasses' own checks run on construction.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from edgefer.apps.live import LiveOptions
from edgefer.errors import ConfigError, EdgeferError
from edgefer.files import read_toml
from edgefer.llm.config import LlmConfig

# Where the kiosk's defaults differ from the command line's.
KIOSK_DEFAULTS: dict[str, dict[str, Any]] = {
    "capture": {"reconnect": True}, "display": {"fullscreen": True},
    "outputs": {"events": "-"}, "http": {"enabled": True}}
# Keys of the kiosk file that are not fields: the LLM's on/off switch and where its key lives.
SWITCHES: dict[str, dict[str, tuple[type, Any]]] = {
    "llm": {"enabled": (bool, False), "api_key_env": (str, "OPENAI_API_KEY")}}
SECRET_HOLDERS = (("http", "token_env"), ("llm", "api_key_env"))  # settings naming a variable
NEVER_FROM_CONFIG = {"llm.api_key": "the key is read from the variable named by llm.api_key_env"}
RENAMED = {"source": "capture", "source.input": "capture.source", "source.realtime":
           "capture.realtime", "source.loop": "capture.loop", "llm.cache": "llm.cache_path"}


def _dataclass_in(hint: Any) -> type | None:
    """The dataclass a field holds (``X`` or ``X | None``), else None."""
    options = typing.get_args(hint) if _is_union(hint) else (hint,)
    found = [o for o in options if dataclasses.is_dataclass(o)]
    return found[0] if found else None


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def sections(cls: type = LiveOptions) -> dict[str, type]:
    """Every nested option dataclass by field name: ``{"capture": CaptureOptions, ...}``."""
    found: dict[str, type] = {}
    for name, hint in typing.get_type_hints(cls).items():
        inner = _dataclass_in(hint)
        if inner is not None:
            found[name] = inner
            found.update(sections(inner))
    return found


SECTIONS = sections()


def _scalar_fields(cls: type) -> dict[str, Any]:
    """The configurable keys of a section and their type hints (nested dataclasses excluded)."""
    return {name: hint for name, hint in typing.get_type_hints(cls).items()
            if _dataclass_in(hint) is None}


def convert(value: Any, hint: Any, key: str, text: bool = False) -> Any:
    """``value`` as ``hint``, or a ConfigError. ``text``: the value is an environment
    variable's string, parsed (``"true"``, ``"9200"``); TOML has its own booleans and numbers,
    so a string there (``enabled = "false"``) is the wrong type. For optional fields an empty
    string means "none"."""
    if _is_union(hint):
        if value == "":
            return None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if text and isinstance(value, str) and hint in (bool, int, float):
        return _parse(value, hint, key)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is Path and isinstance(value, str):
        return Path(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise ConfigError(f"config key {key}: expected {hint.__name__}, got {value!r}")
    return value


def _parse(text: str, kind: type, key: str) -> Any:
    word = text.strip().lower()
    if kind is bool and word in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return word in ("1", "true", "yes", "on")
    try:
        if kind is not bool:
            return kind(word)
    except ValueError:
        pass
    raise ConfigError(f"config key {key}: expected {kind.__name__}, got {text!r}")


def _known_keys(section: str) -> dict[str, Any]:
    keys = {name: hint for name, hint in _scalar_fields(SECTIONS[section]).items()
            if f"{section}.{name}" not in NEVER_FROM_CONFIG}
    keys.update({name: kind for name, (kind, _) in SWITCHES.get(section, {}).items()})
    return keys


def merge(values: dict[str, dict[str, Any]], layer: Mapping[str, Any], origin: str,
          text: bool = False) -> None:
    """Overlay ``{section: {key: value}}`` onto ``values``, converting (``text``: strings to
    parse, see ``convert``) and rejecting unknown names."""
    for name, table in layer.items():
        if name not in SECTIONS:
            hint = f" (renamed [{RENAMED[name]}])" if name in RENAMED else ""
            raise ConfigError(f"{origin}: unknown section [{name}]{hint}; known: {', '.join(SECTIONS)}")
        if not isinstance(table, dict):
            raise ConfigError(f"{origin}: [{name}] must be a table")
        known = _known_keys(name)
        for key, value in table.items():
            dotted = f"{name}.{key}"
            if dotted in NEVER_FROM_CONFIG:  # checked first: not listed as a known key
                raise ConfigError(f"{origin}: {dotted} is not accepted: {NEVER_FROM_CONFIG[dotted]}")
            if key not in known:
                hint = f" (renamed {RENAMED[dotted]})" if dotted in RENAMED else ""
                raise ConfigError(f"{origin}: unknown key {dotted}{hint}; known: {', '.join(known)}")
            values.setdefault(name, {})[key] = convert(value, known[key], f"{dotted} ({origin})",
                                                       text)


def from_environment(environ: Mapping[str, str] | None = None,
                     secrets: Collection[str] = ()) -> dict[str, dict[str, str]]:
    """``EDGEFER_HTTP_PORT=9200`` -> ``{"http": {"port": "9200"}}``; other ``EDGEFER_*``
    variables (``EDGEFER_MANIFEST``...) are not configuration sections and are left alone, and
    so are ``secrets``: the variables that ``http.token_env`` and ``llm.api_key_env`` name
    (``EDGEFER_HTTP_TOKEN`` holds a token; it is not a setting ``http.token``)."""
    environ = os.environ if environ is None else environ
    values: dict[str, dict[str, str]] = {}
    for name, value in environ.items():
        section, _, key = name.removeprefix("EDGEFER_").lower().partition("_")
        if name.startswith("EDGEFER_") and section in SECTIONS and key and name not in secrets:
            values.setdefault(section, {})[key] = value
    return values


def load_config(path: str | Path | None, overrides: dict[str, dict[str, Any]],
                environ: Mapping[str, str] | None = None) -> LiveOptions:
    """Kiosk defaults < TOML file < environment < ``overrides`` (from flags), as options."""
    environ = os.environ if environ is None else environ
    values: dict[str, dict[str, Any]] = {}
    merge(values, KIOSK_DEFAULTS, "kiosk defaults")
    if path is not None:
        merge(values, read_toml(path), str(path))
    layers = [values, from_environment(environ), overrides]
    secrets = {layer.get(section, {}).get(key) for layer in layers for section, key in SECRET_HOLDERS}
    merge(values, from_environment(environ, {str(name) for name in secrets if name}), "environment",
          text=True)
    merge(values, overrides, "command line")
    return build(LiveOptions, values, environ)


def build(cls: type, values: dict[str, dict[str, Any]], environ: Mapping[str, str],
          section: str | None = None) -> Any:
    """``cls`` with its fields from ``values[section]`` and its nested sections built alike."""
    kwargs: dict[str, Any] = {}
    for name, hint in typing.get_type_hints(cls).items():
        inner = _dataclass_in(hint)
        if inner is LlmConfig:
            kwargs[name] = _llm(values, environ)
        elif inner is not None:
            kwargs[name] = build(inner, values, environ, name)
        elif section is not None and name in values.get(section, {}):
            kwargs[name] = values[section][name]
    try:
        return cls(**kwargs)
    except EdgeferError as err:
        raise ConfigError(f"invalid configuration in [{section}]: {err}") from err


def _llm(values: dict[str, dict[str, Any]], environ: Mapping[str, str]) -> LlmConfig | None:
    """The LLM settings when ``llm.enabled``; the key comes from ``llm.api_key_env``. The
    settings are checked even when off: a bad value is found now, not on the day a field
    engineer switches the LLM on."""
    table = dict(values.get("llm", {}))
    switches = {name: table.pop(name, default) for name, (_, default) in SWITCHES["llm"].items()}
    key_variable = switches["api_key_env"]
    try:
        config = LlmConfig(**table, api_key=environ.get(key_variable) or None)
        if not switches["enabled"]:
            return None
        if key_variable != "OPENAI_API_KEY" and config.api_key is None:  # no silent fallback
            raise ConfigError(f"llm.api_key_env names {key_variable}, which is not set or empty")
        config.resolved_api_key()
    except EdgeferError as err:
        raise ConfigError(f"invalid configuration in [llm]: {err}") from err
    return config

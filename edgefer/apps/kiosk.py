"""Kiosk configuration: TOML file, then ``EDGEFER_<SECTION>_<KEY>`` environment variables,
then command-line flags (each overrides the one before). Unknown keys and invalid values are
rejected at start with the key named.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgefer.apps.live import LiveOptions
from edgefer.capture import CaptureOptions
from edgefer.detect import DetectorOptions
from edgefer.errors import ConfigError, EdgeferError
from edgefer.files import read_toml
from edgefer.llm.config import LlmConfig
from edgefer.pipeline import RecognizerOptions


@dataclass
class SourceSection:
    input: str = "0"
    realtime: bool = False
    loop: bool = False


@dataclass
class DisplaySection:
    headless: bool = False
    fullscreen: bool = True


@dataclass
class DetectorSection:
    model: str = "short"
    min_confidence: float = 0.5


@dataclass
class OutputsSection:
    table: str = ""  # "" = none; .csv / .jsonl / .parquet
    record: str = ""  # "" = none; .mp4
    events: str = "-"  # "-" = stdout; "" = off; a path = rotating file
    snapshot_dir: str = ""
    overwrite: bool = False


@dataclass
class HttpSection:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9108
    stale_s: float = 10.0


@dataclass
class LlmSection:
    enabled: bool = False  # the single switch: off means nothing leaves the device
    base_url: str = ""
    model: str = LlmConfig.model
    api_key_env: str = "OPENAI_API_KEY"  # the key is read from this variable, never the file
    threshold: float = LlmConfig.threshold
    policy: str = LlmConfig.policy
    cache: str = ""
    requests_per_minute: int = LlmConfig.requests_per_minute
    requests_per_day: int = LlmConfig.requests_per_day


@dataclass
class KioskConfig:
    source: SourceSection = field(default_factory=SourceSection)
    display: DisplaySection = field(default_factory=DisplaySection)
    detector: DetectorSection = field(default_factory=DetectorSection)
    outputs: OutputsSection = field(default_factory=OutputsSection)
    http: HttpSection = field(default_factory=HttpSection)
    llm: LlmSection = field(default_factory=LlmSection)


def _convert(value: Any, kind: type, key: str) -> Any:
    """``value`` (from TOML or a string from the environment) as ``kind``, or a ConfigError."""
    if isinstance(value, str) and kind is not str:
        text = value.strip().lower()
        if kind is bool and text in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return text in ("1", "true", "yes", "on")
        try:
            return kind(text) if kind is not bool else _fail(key, value, kind)
        except ValueError:
            _fail(key, value, kind)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        _fail(key, value, kind)
    return value


def _fail(key: str, value: Any, kind: type) -> Any:
    raise ConfigError(f"config key {key}: expected {kind.__name__}, got {value!r}")


def apply(config: KioskConfig, values: dict[str, Any], origin: str) -> None:
    """Overlay ``{section: {key: value}}`` onto ``config``, rejecting unknown names."""
    sections = {f.name: f for f in dataclasses.fields(config)}
    for name, table in values.items():
        if name not in sections:
            raise ConfigError(f"{origin}: unknown section [{name}]; known: {', '.join(sections)}")
        if not isinstance(table, dict):
            raise ConfigError(f"{origin}: [{name}] must be a table")
        section = getattr(config, name)
        kinds = {f.name: f.type for f in dataclasses.fields(section)}
        for key, value in table.items():
            if key not in kinds:
                raise ConfigError(f"{origin}: unknown key {name}.{key}; known: "
                                  f"{', '.join(kinds)}")
            kind = {"str": str, "bool": bool, "int": int, "float": float}[str(kinds[key])]
            setattr(section, key, _convert(value, kind, f"{name}.{key}"))


def from_environment(environ: dict[str, str] | None = None) -> dict[str, dict[str, str]]:
    """``EDGEFER_HTTP_PORT=9200`` -> ``{"http": {"port": "9200"}}`` for known sections."""
    environ = dict(os.environ if environ is None else environ)
    sections = {f.name for f in dataclasses.fields(KioskConfig)}
    values: dict[str, dict[str, str]] = {}
    for name, value in environ.items():
        if not name.startswith("EDGEFER_") or name in ("EDGEFER_MANIFEST", "EDGEFER_SHARED_DATA"):
            continue
        rest = name[len("EDGEFER_"):].lower()
        section, _, key = rest.partition("_")
        if section in sections and key:
            values.setdefault(section, {})[key] = value
    return values


def load_config(path: str | Path | None, overrides: dict[str, dict[str, Any]],
                environ: dict[str, str] | None = None) -> KioskConfig:
    """Defaults < TOML file < environment < ``overrides`` (from flags); validated."""
    config = KioskConfig()
    if path is not None:
        apply(config, read_toml(path), str(path))
    apply(config, from_environment(environ), "environment")
    apply(config, overrides, "command line")
    to_live_options(config)  # builds every options object: invalid values fail here
    return config


def to_live_options(config: KioskConfig) -> LiveOptions:
    try:
        return _live_options(config)
    except EdgeferError as err:
        raise ConfigError(f"invalid configuration: {err}") from err


def _live_options(config: KioskConfig) -> LiveOptions:
    llm = None
    if config.llm.enabled:
        llm = LlmConfig(model=config.llm.model, base_url=config.llm.base_url or None,
                        api_key=os.environ.get(config.llm.api_key_env) or None,
                        threshold=config.llm.threshold, policy=config.llm.policy,
                        cache_path=config.llm.cache or None,
                        requests_per_minute=config.llm.requests_per_minute,
                        requests_per_day=config.llm.requests_per_day)
        llm.resolved_api_key()
    if config.http.enabled and not 0 <= config.http.port <= 65535:
        raise ConfigError(f"config key http.port: {config.http.port} is not a TCP port")
    outputs = config.outputs
    return LiveOptions(
        capture=CaptureOptions(source=config.source.input, realtime=config.source.realtime,
                               loop=config.source.loop, reconnect=True),
        recognizer=RecognizerOptions(
            detector=DetectorOptions(model=config.detector.model,
                                     min_confidence=config.detector.min_confidence),
            llm=llm),
        headless=config.display.headless, fullscreen=config.display.fullscreen,
        record=Path(outputs.record) if outputs.record else None,
        output=Path(outputs.table) if outputs.table else None, overwrite=outputs.overwrite,
        snapshot_dir=Path(outputs.snapshot_dir) if outputs.snapshot_dir else None,
        events=outputs.events or None, http_host=config.http.host,
        http_port=config.http.port if config.http.enabled else None, stale_s=config.http.stale_s)

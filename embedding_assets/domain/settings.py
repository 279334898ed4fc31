"""Settings read from the environment, with the seed system's variable names.

Unset means the embedded default (SQLite, a local folder, the offline model),
so nothing reaches a network or spends money unless a variable says so. A bad
value fails here, at load, with the variable's name, rather than deep inside a
run hours later.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import overload

from embedding_assets.domain import openai_models
from embedding_assets.domain.formatting import DEFAULT_RECIPES, RECIPES
from embedding_assets.domain.pricing import PRICE_PER_MTOK

PROVIDERS = ("local", "openai")
# The widest vector the local provider's model (wordllama's l2_supercat_256) gives; it cuts to any size below.
LOCAL_NATIVE_DIMENSIONS = 256


class ConfigError(ValueError):
    """A configuration variable holds a value the pipeline cannot use."""


@dataclass(frozen=True)
class ChromaServer:
    """Where server mode's collections live (`CHROMA_HOST` set); None of it is read in snapshot mode.

    `headers` go with every request (an auth proxy's, a hosted Chroma's);
    `auth_token` is a secret, sent as `Authorization: Bearer`. `tenant` and
    `database` name the namespace the collections are kept in, created on
    first use when the server allows it.
    """

    host: str
    port: int = 8000
    ssl: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    auth_token: str | None = field(default=None, repr=False)
    tenant: str = "default_tenant"
    database: str = "default_database"


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    provider: str
    model: str | None
    dimensions: int | None
    openai_api_key: str | None
    openai_base_url: str | None
    dynamodb_table: str | None
    s3_bucket: str | None
    chromadb_bucket: str | None
    aws_endpoint_url: str | None
    chroma_persist_directory: Path
    chunk_size: int
    heartbeat_interval_seconds: float
    lock_duration_minutes: float
    delete_processed_deltas: bool
    delete_intermediate_chunks: bool
    max_attempts: int
    keep_snapshot_versions: int
    max_items_per_run: int
    openai_max_retries: int = 5
    openai_timeout_seconds: float = 600.0
    enqueued_token_limit: int | None = None
    output_expires_after_hours: int = 168
    reap_after_hours: float = 48.0
    batch_prices: dict[str, float] = field(default_factory=lambda: dict(PRICE_PER_MTOK))
    sensor_interval_seconds: int = 60
    max_requests_per_batch: int = 50_000
    recipes: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_RECIPES))
    chroma_server: ChromaServer | None = None

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "receipts.sqlite3"

    @property
    def objects_dir(self) -> Path:
        return self.data_dir / "objects"

    @property
    def provider_dir(self) -> Path:
        return self.data_dir / "local_provider"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        reader = _Reader(env)
        data_dir = Path(reader.text("DATA_DIR") or ".data").absolute()
        provider = (reader.text("EMBEDDING_PROVIDER") or "local").lower()
        if provider not in PROVIDERS:
            raise ConfigError(f"EMBEDDING_PROVIDER={provider!r}: must be one of {', '.join(PROVIDERS)}")
        api_key = reader.text("OPENAI_API_KEY")
        if provider == "openai" and not api_key:
            raise ConfigError("OPENAI_API_KEY: required when EMBEDDING_PROVIDER=openai")
        model, dimensions = reader.text("EMBEDDING_MODEL"), reader.integer("EMBEDDING_DIMENSIONS", None, minimum=1)
        if provider == "openai":
            model = model or openai_models.DEFAULT_MODEL
            try:
                openai_models.resolve_dimensions(model, dimensions)
            except ValueError as exc:
                raise ConfigError(f"EMBEDDING_DIMENSIONS={dimensions} with EMBEDDING_MODEL={model!r}: {exc}") from None
        elif dimensions is not None and dimensions > LOCAL_NATIVE_DIMENSIONS:
            raise ConfigError(f"EMBEDDING_DIMENSIONS={dimensions}: the local provider's model gives at most "
                              f"{LOCAL_NATIVE_DIMENSIONS}")
        heartbeat = reader.number("HEARTBEAT_INTERVAL_SECONDS", 30.0, minimum=0.1)
        lock_minutes = reader.number("LOCK_DURATION_MINUTES", 5.0, minimum=0.01)
        if heartbeat >= lock_minutes * 60:
            raise ConfigError(f"HEARTBEAT_INTERVAL_SECONDS={heartbeat:g} with LOCK_DURATION_MINUTES={lock_minutes:g}: "
                              "the heartbeat must renew a lease before it expires (interval < duration)")
        s3_bucket, chromadb_bucket = reader.text("S3_BUCKET"), reader.text("CHROMADB_BUCKET")
        if bool(s3_bucket) != bool(chromadb_bucket):
            missing = "CHROMADB_BUCKET" if s3_bucket else "S3_BUCKET"
            raise ConfigError(
                f"{missing}: required with {'S3_BUCKET' if s3_bucket else 'CHROMADB_BUCKET'} (S3 holds both)"
            )
        return cls(
            data_dir=data_dir,
            provider=provider,
            model=model,
            dimensions=dimensions,
            openai_api_key=api_key,
            openai_base_url=reader.text("OPENAI_BASE_URL"),
            dynamodb_table=reader.text("DYNAMODB_TABLE_NAME"),
            s3_bucket=s3_bucket,
            chromadb_bucket=chromadb_bucket,
            aws_endpoint_url=reader.text("AWS_ENDPOINT_URL"),
            chroma_persist_directory=Path(reader.text("CHROMA_PERSIST_DIRECTORY") or data_dir / "chroma").absolute(),
            chunk_size=reader.integer("CHUNK_SIZE", 5000, minimum=1, maximum=5461),
            heartbeat_interval_seconds=heartbeat,
            lock_duration_minutes=lock_minutes,
            delete_processed_deltas=reader.boolean("DELETE_PROCESSED_DELTAS", False),
            delete_intermediate_chunks=reader.boolean("DELETE_INTERMEDIATE_CHUNKS", True),
            max_attempts=reader.integer("MAX_ATTEMPTS", 3, minimum=1),
            keep_snapshot_versions=reader.integer("KEEP_SNAPSHOT_VERSIONS", 3, minimum=1),
            max_items_per_run=reader.integer("MAX_ITEMS_PER_RUN", 500_000, minimum=1),
            openai_max_retries=reader.integer("OPENAI_MAX_RETRIES", 5, minimum=0, maximum=50),
            openai_timeout_seconds=reader.number("OPENAI_TIMEOUT_SECONDS", 600.0, minimum=1.0),
            enqueued_token_limit=reader.integer("ENQUEUED_TOKEN_LIMIT", None, minimum=1),
            output_expires_after_hours=reader.integer("OUTPUT_EXPIRES_AFTER_HOURS", 168, minimum=1, maximum=720),
            reap_after_hours=reader.number("REAP_AFTER_HOURS", 48.0, minimum=0.01),
            batch_prices={**PRICE_PER_MTOK, **reader.prices("BATCH_PRICES_PER_MTOK")},
            sensor_interval_seconds=reader.integer("SENSOR_INTERVAL_SECONDS", 60, minimum=1),
            max_requests_per_batch=reader.integer("MAX_REQUESTS_PER_BATCH", 50_000, minimum=1, maximum=50_000),
            recipes={kind: reader.choice(f"{kind.upper()}_RECIPE", RECIPES[kind]) for kind in RECIPES},
            chroma_server=_chroma_server(reader),
        )


def _chroma_server(reader: _Reader) -> ChromaServer | None:
    host = reader.text("CHROMA_HOST")
    if host is None:
        return None
    return ChromaServer(
        host=host,
        port=reader.integer("CHROMA_PORT", 8000, minimum=1, maximum=65535),
        ssl=reader.boolean("CHROMA_SSL", False),
        headers=reader.pairs("CHROMA_HEADERS", "name=value"),
        auth_token=reader.text("CHROMA_AUTH_TOKEN"),
        tenant=reader.text("CHROMA_TENANT") or "default_tenant",
        database=reader.text("CHROMA_DATABASE") or "default_database",
    )


def parse_pairs(name: str, raw: str | None, shape: str) -> dict[str, str]:
    """`key=value` pairs, comma separated; a pair without a key or `=` fails naming the variable.

    Public for a resource that is handed the raw variable (an EnvVar, so its value stays off the UI).
    """
    pairs: dict[str, str] = {}
    for pair in (raw or "").split(","):
        if not pair.strip():
            continue
        key, sep, value = pair.partition("=")
        if not (sep and key.strip()):
            raise ConfigError(f"{name}: expected {shape} pairs, comma separated")
        pairs[key.strip()] = value.strip()
    return pairs


class _Reader:
    """Typed access to variables, each failure naming the variable."""

    def __init__(self, env: Mapping[str, str]):
        self.env = env

    def text(self, name: str) -> str | None:
        value = self.env.get(name, "").strip()
        return value or None

    @overload
    def integer(self, name: str, default: int, minimum: int | None = None, maximum: int | None = None) -> int: ...

    @overload
    def integer(self, name: str, default: None, minimum: int | None = None,
                maximum: int | None = None) -> int | None: ...

    def integer(self, name: str, default: int | None, minimum: int | None = None,
                maximum: int | None = None) -> int | None:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r}: not an integer") from None
        _check_range(name, value, minimum, maximum)
        return value

    def number(self, name: str, default: float, minimum: float | None = None) -> float:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r}: not a number") from None
        _check_range(name, value, minimum, None)
        return value

    def pairs(self, name: str, shape: str) -> dict[str, str]:
        return parse_pairs(name, self.text(name), shape)

    def prices(self, name: str) -> dict[str, float]:
        """`model=USD per million tokens` pairs, comma separated."""
        prices: dict[str, float] = {}
        for model, value in self.pairs(name, "model=price").items():
            try:
                price = float(value)
            except ValueError:
                price = -1.0
            if not (math.isfinite(price) and price >= 0):
                raise ConfigError(f"{name}={self.text(name)!r}: expected model=price pairs, comma separated, "
                                  "prices >= 0")
            prices[model] = price
        return prices

    def choice(self, name: str, allowed: tuple[str, ...]) -> str:
        """One of `allowed`; unset means the first."""
        raw = self.text(name)
        if raw is None:
            return allowed[0]
        if raw.lower() not in allowed:
            raise ConfigError(f"{name}={raw!r}: must be one of {', '.join(allowed)}")
        return raw.lower()

    def boolean(self, name: str, default: bool) -> bool:
        raw = self.text(name)
        if raw is None:
            return default
        lowered = raw.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{name}={raw!r}: expected true/false")


def _check_range(name: str, value: float, minimum: float | None, maximum: float | None) -> None:
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}={value}: must be >= {minimum}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name}={value}: must be <= {maximum}")

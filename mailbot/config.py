"""Settings: defaults for the embedded single-process setup, overridden by a TOML file and
by ``MAILBOT_*`` environment variables (in that order of strength: env wins).

The defaults are what ``mailbot serve`` on a fresh machine needs and nothing more: SMTP on
127.0.0.1:2525, HTTP on 127.0.0.1:8025, SQLite at ``./mailbot.db``, domain ``localhost``, no
relay (outbound mail is held, not lost) and no spam scanning (said so in the log and the JSON).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

MiB = 1024 * 1024


class Settings(BaseSettings):
    """Everything a node needs to know; one instance is built at start and then only read."""

    model_config = SettingsConfigDict(env_prefix="MAILBOT_", extra="forbid", frozen=True)

    database_url: str = "sqlite+aiosqlite:///./mailbot.db"
    domain: str = "localhost"
    # Other domains we receive for (aliases of `domain`); never a relay for anything else.
    extra_domains: list[str] = Field(default_factory=list)
    hostname: str = "localhost"  # our name in the SMTP banner and in Message-IDs we make
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 2525
    http_host: str = "127.0.0.1"
    http_port: int = 8025
    max_message_size: int = 25 * MiB
    # smtp://host:port or smtps://host:port (implicit TLS); starttls is explicit, never guessed.
    relay: str | None = None
    relay_starttls: bool = False
    relay_timeout: float = 30.0
    from_name: str = "mailbot"
    from_local: str = "notifications"
    token_ttl_days: int = 365
    # Worker: CPU-heavy stages (MIME, talon) run in `cpu_workers` processes; 0 means a thread.
    cpu_workers: int = 1
    worker_concurrency: int = 4
    max_attempts: int = 5
    retry_base_seconds: float = 2.0
    poll_seconds: float = 1.0
    # Spam scanning through spamd (host:port); unset means off.
    spamd: str | None = None
    spamd_timeout: float = 10.0
    spamd_concurrency: int = 4
    spam_quarantine_score: float | None = None  # None: spamd's own required score
    spam_reject_score: float | None = None  # None: never refuse at DATA time
    spamd_down: Literal["tempfail", "accept"] = "accept"
    migrate_on_start: bool | None = None  # None: only for SQLite, the embedded default

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = os.environ.get("MAILBOT_CONFIG", "mailbot.toml")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if Path(toml).is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)

    @field_validator("domain", "hostname")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.strip().lower()

    @field_validator("extra_domains")
    @classmethod
    def _lower_all(cls, value: list[str]) -> list[str]:
        return [d.strip().lower() for d in value if d.strip()]

    @field_validator("relay")
    @classmethod
    def _check_relay(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError(f"MAILBOT_RELAY must look like smtp://host:port, not {value!r}")
        return value

    @property
    def domains(self) -> frozenset[str]:
        """Every domain we accept mail for."""
        return frozenset([self.domain, *self.extra_domains])

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def should_migrate_on_start(self) -> bool:
        return self.is_sqlite if self.migrate_on_start is None else self.migrate_on_start

    @property
    def from_address(self) -> str:
        return f"{self.from_local}@{self.domain}"

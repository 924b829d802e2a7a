"""Settings: defaults for the embedded single-process setup, overridden by a TOML file and
by ``MAILBOT_*`` environment variables (in that order of strength: env wins).

The defaults are what ``mailbot serve`` on a fresh machine needs and nothing more: SMTP on
127.0.0.1:2525, HTTP on 127.0.0.1:8025, state in ``./mailbot-data`` (SQLite ``mailbot.db``, the TLS
pair, blobs), domain ``localhost``, no
relay (outbound mail is held, not lost) and no spam scanning (said so in the log and the JSON).
"""

from __future__ import annotations

import difflib
import json
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from mailbot.errors import ConfigError

MiB = 1024 * 1024

# MAILBOT_* variables that are read elsewhere, not settings.
_NOT_SETTINGS = frozenset(
    {"MAILBOT_CONFIG", "MAILBOT_DEBUG", "MAILBOT_SCREENSHOTS", "MAILBOT_TEST_POSTGRES"}
)


class BotConfig(BaseModel):
    """One ``[bots.<name>]`` table of the settings file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    addresses: list[str] = Field(default_factory=list)
    settings: dict[str, Any] = Field(default_factory=dict)


class Settings(BaseSettings):
    """Everything a node needs to know; one instance is built at start and then only read."""

    model_config = SettingsConfigDict(env_prefix="MAILBOT_", extra="forbid", frozen=True)

    # Where a node keeps its state: the SQLite file (unless database_url names another), the
    # self-signed TLS pair, blobs, DKIM keys, the unsubscribe key. Unset: the folder of the
    # SQLite file database_url names, else ./mailbot-data. A relative path is taken from the
    # directory the command runs in, so a checkout or a deployment keeps its state beside
    # itself (one folder to back up, or to mount as a container volume) rather than in a
    # per-user XDG folder a service account may not have; give an absolute path in production.
    home: Path | None = None
    # Where everything is stored: a SQLite file (empty: mailbot.db in home, the embedded
    # default), or PostgreSQL (postgresql+asyncpg://user@host/db) for several nodes.
    database_url: str = ""
    # The domain of reply addresses (reply+<token>@domain), of our From and of VERP.
    domain: str = "localhost"
    # Other domains we receive for (aliases of `domain`); never a relay for anything else.
    # In the environment as JSON or as a comma-separated list: a.test,b.test
    extra_domains: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Our name in the SMTP banner and in the Message-IDs we make.
    hostname: str = "localhost"
    # Where the SMTP server and the HTTP side (page, API, health) listen; 0 picks a free port.
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=2525, ge=0, le=65535)
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8025, ge=0, le=65535)
    # The HTTP side is closed by default (mailbot/web/): bound to anything but loopback it
    # refuses to start without `api_token` or a live token made by `mailbot api-token
    # create` (sent as `Authorization: Bearer ...`), unless `insecure_no_auth` says so
    # explicitly. Host headers not in `allowed_hosts` (plus
    # http_host itself) get 400, which stops DNS rebinding against the loopback page.
    api_token: SecretStr | None = None
    insecure_no_auth: bool = False
    allowed_hosts: list[str] = Field(
        default_factory=lambda: ["localhost", "127.0.0.1", "::1", "[::1]"]
    )
    # A reply address found live at RCPT is taken without a query for this long (never past
    # its token's expiry; 0: asked each time). Revoked by another process meanwhile, its mail
    # is `rejected` by the worker with why (mailbot/store/live_tokens.py).
    rcpt_cache_seconds: float = Field(default=2.0, ge=0, le=60)
    # The largest message taken, advertised with SIZE; a bigger one is refused with 552.
    max_message_size: int = 25 * MiB
    # Bounded work per message (mailbot/screen.py), checked before anything parses the mail;
    # compare Postfix (header_size_limit 100 KiB per header, mime_nesting_limit 100) and Haraka
    # (max header lines 1000). Over a limit: 552/554 at DATA, or `rejected` with the reason.
    max_header_bytes: int = 256 * 1024  # the whole header block
    max_header_count: int = 1000
    max_structured_header_bytes: int = 16 * 1024  # one address or MIME header, unfolded
    max_encoded_words: int = 1000  # RFC 2047 words in all headers together
    max_addresses: int = 1000  # addresses in all address headers together
    max_mime_depth: int = 30
    max_mime_parts: int = 1000
    # Where outbound mail goes: smtp://user:pass@host:port, or smtps:// for implicit TLS;
    # relay_starttls=true requires STARTTLS (explicit, never guessed).
    relay: str | None = None
    relay_starttls: bool = False
    relay_timeout: float = 30.0  # each SMTP step of outbound delivery, relay or MX
    # "relay": everything goes to `relay` (held while it is unset). "mx": with no relay, mail
    # goes straight to each recipient domain's MX (mailbot/outbound/mx.py), over STARTTLS when
    # offered, required where the domain publishes an MTA-STS policy in enforce mode.
    delivery: Literal["relay", "mx"] = "relay"
    # A mail refused for now (4xx, timeout) is tried again with backoff until it has waited
    # this long, then `failed`, as common MTAs do (Postfix: maximal_queue_lifetime, 5 days).
    delivery_lifetime_hours: float = 120.0
    # Open SMTP connections of the outbox: in all, and to one destination (the relay, or one
    # recipient domain). Several mails to one destination share a connection.
    delivery_connections: int = 20
    delivery_connections_per_destination: int = 2
    # Our mail comes From "from_name <from_local@domain>"; a reply address lives token_ttl_days.
    from_name: str = "mailbot"
    from_local: str = "notifications"
    token_ttl_days: int = 365
    # Worker: CPU-heavy stages (MIME, talon) run in `cpu_workers` processes; 0 means a thread.
    # Two by default (this is a 2-core design point): one slow message never delays the next.
    cpu_workers: int = 2
    # Each analyser process is capped (mailbot/pipeline/analyse.py): a message that needs more
    # time or memory than this is refused as hostile (`rejected`, code too_costly), once, and the
    # process is replaced.
    analyse_timeout: float = 30.0
    analyse_memory_mb: int = 2048
    # Messages in flight at once; those that finish phase 1 together share one transaction
    # (pipeline/batches.py). SQLite, 4 against 16: 91 and 111 msg/s end to end, p99 430 and
    # 169 ms at 100/s offered, 773 and 618 msg/s accepted (benchmarks/throughput.py, one hour).
    worker_concurrency: int = 16
    # `mailbot serve` with SMTP and the worker: run the worker in a child process beside the
    # SMTP server (mailbot/pipeline/child.py), so the pipeline's CPU does not delay RCPT and
    # DATA: acceptance 686 msg/s against 213 in one process on SQLite (one run, 2 cores,
    # benchmarks/throughput.py --quick); it costs one process more (RSS 680 against 569 MiB).
    worker_process: bool = True
    # Tries of a message whose work failed (a bot that raised, a database error) before it is
    # `failed`, with its traceback on the row.
    max_attempts: int = 5
    # A claimed inbound row is leased for this long and the lease is renewed while the work
    # runs; a row of a node that died goes back to the queue once its lease has run out.
    lease_seconds: float = 60.0
    # Retries wait retry_base_seconds, doubled each time (with jitter); unwoken, the worker and
    # the outbox look for due work every poll_seconds.
    retry_base_seconds: float = 2.0
    poll_seconds: float = 1.0
    # Spam scanning through spamd (host:port); unset means off. See mailbot/spam/policy.py.
    spamd: str | None = None
    spamd_timeout: float = 10.0
    spamd_concurrency: int = 4  # scans in flight at once, per node
    spam_quarantine_score: float | None = None  # None: spamd's own required score
    spam_reject_score: float | None = None  # None: never refuse at DATA time
    # spamd down or slow: "tempfail" answers 451 at DATA; "accept" stores it as `unscanned`.
    spamd_down: Literal["tempfail", "accept"] = "accept"
    spamd_recheck_seconds: float = 30.0  # how often to ask a down spamd again for unscanned mail
    migrate_on_start: bool | None = None  # None: only for SQLite, the embedded default
    # Webhooks (mailbot/outbound/webhooks.py): each final message, and each comment posted,
    # POSTed as JSON to every URL here, signed with HMAC-SHA256 under webhook_secret.
    webhook_urls: list[str] = []
    webhook_secret: SecretStr | None = None
    webhook_timeout: float = 10.0
    webhook_max_attempts: int = 12  # with the retry backoff, about a day of trying
    # Inbound webhooks (mailbot/ingress/), each off (404) until set. Mailgun, POSTing to
    # /ingress/mailgun/messages.mime: the account's HTTP webhook signing key, which signs
    # each post (HMAC-SHA256 of its timestamp and token).
    mailgun_signing_key: SecretStr | None = None
    # Postmark, POSTing to /ingress/postmark: the password of the Basic credentials written
    # into its inbound webhook URL (user "mailbot", at least 16 characters).
    postmark_password: SecretStr | None = None
    # SendGrid, POSTing to /ingress/sendgrid: the public key (ECDSA, base64, as SendGrid shows
    # it) of the Inbound Parse security policy that signs its posts.
    sendgrid_public_key: str | None = None
    # DKIM signing of what we send (mailbot/outbound/signing.py): the key file `mailbot dkim
    # keygen` writes, its selector, and the signing domain (None: the From address's domain).
    dkim_key: Path | None = None
    dkim_selector: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
    dkim_domain: str | None = None
    # What `serve` logs (mailbot/logs.py): from this level up, as text or as JSON lines.
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    # Where people reach this node's web side (https://mail.example.org): notifications then
    # carry a one-click List-Unsubscribe link (mailbot/outbound/unsubscribe.py) signed with
    # unsubscribe_secret (None: a key made once in home; set one for several nodes).
    public_url: AnyHttpUrl | None = None
    unsubscribe_secret: SecretStr | None = None
    # TLS (mailbot/smtp/tls.py): STARTTLS on the SMTP port, implicit TLS on `smtps_port` when set
    # (465 in production, 0 picks a free one). Without tls_cert/tls_key a self-signed pair is
    # made on the first start and kept in home.
    starttls: bool = True
    tls_cert: Path | None = None
    tls_key: Path | None = None
    require_starttls: bool = False  # 530 to MAIL before STARTTLS; not for a public MX
    smtps_port: int | None = Field(default=None, ge=0, le=65535)
    # SMTP AUTH (PLAIN, LOGIN; only over TLS) for trusted submitters: name → scrypt hash made
    # by `mailbot smtp-password NAME`. AUTH never makes mailbot a relay to other domains.
    smtp_users: dict[str, str] = Field(default_factory=dict)
    # Rate limits (mailbot/smtp/ratelimit.py), in memory per node; 0 turns one off. Clients in
    # rate_limit_exempt (loopback by default, as Postfix's anvil does) are not limited, and
    # authenticated submitters are not held to the message limits.
    max_connections: int = 1000
    max_connections_per_ip: int = 50  # Postfix's smtpd_client_connection_count_limit
    connections_per_minute_per_ip: int = 60
    messages_per_minute_per_ip: int = 60
    messages_per_minute_per_sender: int = 30
    rate_limit_exempt: list[str] = Field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    # The per-IP connection cap (max_connections_per_ip), the error cap and the unknown-
    # recipient slowdown apply to every client, loopback included (a local proxy makes
    # everyone loopback), except the networks listed here and logged-in submitters; behind a
    # local proxy, list the proxy here.
    connection_limit_exempt: list[str] = Field(default_factory=list)
    # Idle timeout of an SMTP session; under stress (open connections >= smtp_stress_at of
    # max_connections) it shrinks to smtp_stress_idle_timeout, as Postfix's stress mode does.
    smtp_idle_timeout: float = 300.0
    smtp_stress_idle_timeout: float = 10.0
    smtp_stress_at: float = 0.5
    # Errors per session before 421 and disconnect (Postfix smtpd_hard_error_limit), and a
    # per-IP slowdown once an IP has refused recipients (unknown reply tokens): each refusal
    # past `bad_recipients_free` in the last minute waits `bad_recipient_delay` more seconds,
    # up to `bad_recipient_max_delay`.
    smtp_hard_error_limit: int = 10
    bad_recipients_free: int = 3
    bad_recipient_delay: float = 0.5
    bad_recipient_max_delay: float = 5.0
    # Sender trust (mailbot/trust/, mailbot/outbound/notices.py). DNS for SPF/DKIM/DMARC:
    # "system" asks the machine's resolver; "offline" answers only from dns_zone
    # (name → ["TXT v=spf1 ...", "MX 10 mx.example.org"]), NXDOMAIN for the rest (tests).
    dns: Literal["system", "offline"] = "system"
    dns_zone: dict[str, list[str]] = Field(default_factory=dict)
    dns_timeout: float = 5.0
    # Other addresses that count as a participant when they reply: address → its aliases.
    sender_aliases: dict[str, list[str]] = Field(default_factory=dict)
    notice_interval_seconds: int = 3600  # at most one rejection notice per sender per interval
    # What bots send: at most this many mails to one address per hour (stops any loop that
    # got past classify); 0 turns it off. Over the limit a mail is stored `failed`, not sent.
    max_sends_per_address_per_hour: int = 30
    # A conversation that got more than loop_max_replies replies acted on in the last
    # loop_window_seconds is paused (mail to it refused, `paused`) until it calms down: two
    # bots answering each other, one that does not say it is automatic (pipeline/loops.py).
    loop_max_replies: int = Field(default=20, ge=0)  # 0: no pause
    loop_window_seconds: int = Field(default=600, ge=1)
    # The blob store (mailbot/store/blobs.py): raw messages of blob_threshold bytes or more,
    # and every attachment, are files named by their SHA-256 under blob_dir (None: `blobs` in
    # home), fsynced before the row naming them commits. Several nodes sharing one
    # PostgreSQL need one blob_dir they all reach (a shared filesystem).
    blob_dir: Path | None = None
    blob_threshold: int = Field(default=256 * 1024, ge=0)
    # Retention (mailbot/store/retention.py): the raw message and the attachments of mail in a
    # final status are removed this many days after it was received (0: kept forever), every
    # retention_every_seconds inside `serve`, and by `mailbot purge`. Conversations, comments
    # and the parsed text stay.
    retention_days: int = Field(default=30, ge=0)
    retention_every_seconds: float = Field(default=3600.0, gt=0)
    # Mail to a temporary address (the inspector's: mailbot inspector new) is kept, parsed,
    # this many hours, then removed whole, parsed JSON included (0: as other mail).
    inspector_retention_hours: float = Field(default=24.0, ge=0)
    # Which bots run (mailbot/app.py): besides the app's, those in bots_dir (None:
    # ./bots when there is one; each *.py file's Bot classes) and those installed as packages
    # (entry point group `mailbot.bots`). One table a bot, [bots.<name>] in the settings
    # file: enabled (false: not run; a package's entry point of that name is not even
    # imported), addresses (routed to it, before the app's routes: a local part, a whole
    # address or /regex/), settings (what the bot reads as ctx.bot_settings).
    bots_dir: Path | None = None
    bots: dict[str, BotConfig] = Field(default_factory=dict)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml = cls.config_file()
        if toml is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)

    @staticmethod
    def config_file() -> Path | None:
        """The settings file read: MAILBOT_CONFIG (it must exist; empty: none), else
        ./mailbot.toml if there is one."""
        toml = os.environ.get("MAILBOT_CONFIG", "mailbot.toml")
        if os.environ.get("MAILBOT_CONFIG") and not Path(toml).is_file():
            raise ConfigError(f"MAILBOT_CONFIG names {toml!r}, and there is no such file")
        if not toml or not Path(toml).is_file():
            return None
        try:  # read here so a broken file is named, not a bare TOMLDecodeError later
            tomllib.loads(Path(toml).read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"{toml} is not valid TOML: {exc}; fix it, or name another file in MAILBOT_CONFIG"
            ) from None
        return Path(toml)

    @field_validator("domain", "hostname")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.strip().lower()

    @field_validator("extra_domains", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            return json.loads(text) if text.startswith("[") else text.split(",")
        return value

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

    @model_validator(mode="after")
    def _state_in_home(self) -> Settings:
        # Fixed once, as the settings are read (frozen: hence object.__setattr__), and made
        # absolute: a child process or a later chdir finds the same folder.
        home = self.home
        if home is None:
            from mailbot.store.db import sqlite_file  # the one rule for a SQLite URL's file

            path = sqlite_file(self.database_url) if self.database_url else None
            home = Path(path).parent if path else Path("mailbot-data")
        object.__setattr__(self, "home", home.expanduser().absolute())
        if not self.database_url:
            object.__setattr__(
                self, "database_url", f"sqlite+aiosqlite:///{self.home_dir / 'mailbot.db'}"
            )
        return self

    @property
    def home_dir(self) -> Path:
        """The state folder, as settled when the settings were read."""
        assert self.home is not None  # set by _state_in_home
        return self.home

    @model_validator(mode="after")
    def _one_way_out(self) -> Settings:
        if self.delivery == "mx" and self.relay:
            raise ValueError("MAILBOT_DELIVERY=mx sends without a relay: unset MAILBOT_RELAY")
        return self

    @property
    def sends(self) -> bool:
        """Whether outbound mail goes anywhere: to a relay, or to MX hosts."""
        return bool(self.relay) or self.delivery == "mx"

    @classmethod
    def unknown_environment(cls) -> list[str]:
        """``MAILBOT_*`` variables that set nothing (a typo is otherwise silently ignored),
        each with the setting it was probably meant to be."""
        known = {f"MAILBOT_{name.upper()}" for name in cls.model_fields}
        unknown = sorted(k for k in os.environ if k.startswith("MAILBOT_") and k not in known)
        out = []
        for name in unknown:
            if name in _NOT_SETTINGS:
                continue
            close = difflib.get_close_matches(name, sorted(known), n=1)
            out.append(f"{name} (did you mean {close[0]}?)" if close else name)
        return out

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

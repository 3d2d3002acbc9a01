"""The one settings object.

Sources, highest priority first: keyword arguments (the CLI's flags), environment variables
``SEMCACHE_*``, the YAML file named by ``SEMCACHE_CONFIG``, then the defaults below.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

ChunkFormat = Literal["none", "blend-separator", "messages", "canonical-order"]


class Backend(BaseModel):
    """One OpenAI-compatible backend replica (``SEMCACHE_BACKENDS``, docs/ROUTING.md)."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="OpenAI base URL, e.g. http://gpu-1:8000/v1")
    name: str | None = Field(None, description="Label in metrics (default: host:port)")
    weight: float = Field(1.0, gt=0, description="Share of the load relative to the others")
    chunk_format: ChunkFormat = "none"
    tokenizer: Path | None = Field(
        None, description="Local tokenizer directory of the backend's model (blend-separator)")
    blend_separator: str = Field(" # # ", description="LMCache's blend_special_str")
    kv_capacity_tokens: int = Field(
        2_000_000, ge=1, description="Tokens of chunk KV the backend can hold (registry size)")

    @field_validator("url")
    @classmethod
    def _strip(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("backend url must start with http:// or https://")
        return v.rstrip("/")

    def label(self) -> str:
        return self.name or self.url.split("://", 1)[1].split("/", 1)[0]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SEMCACHE_", extra="forbid")

    # --- upstream -------------------------------------------------------------------------
    upstream_url: str = Field(
        "http://127.0.0.1:8000/v1",
        description="OpenAI base URL of the backend, as you would give it to the openai client.",
    )
    upstream_api_key: SecretStr | None = Field(
        None, description="If set, sent upstream instead of the client's Authorization header."
    )
    upstream_timeout_s: float = Field(
        600.0, gt=0, description="Longest wait for the upstream's next byte (504 after it)."
    )
    upstream_connect_timeout_s: float = Field(5.0, gt=0, description="Connect timeout (502/504).")
    upstream_max_connections: int = Field(256, ge=1, description="Connection pool size.")
    upstream_transport: Literal["aiohttp", "httpx"] = Field(
        "aiohttp", description="The HTTP/1.1 connections under the upstream client: aiohttp's "
        "(compiled parser: a miss's upstream call costs less) or httpx's own. With a proxy "
        "set in the environment (HTTP_PROXY, ...) httpx's is used, which honours it.",
    )
    stream_no_store: Literal["honor", "ignore"] = Field(
        "honor", description="An upstream event stream marked Cache-Control: no-store is not "
        "stored (honor), or is (ignore: for servers that mark every stream so to keep proxies "
        "from buffering it, as llama-cpp-python's does). `private` is always honoured.",
    )
    upstream_metrics_url: str | None = Field(
        None, description="Backend Prometheus endpoint for its load (default: upstream root + "
        "/metrics; 'off' to use only what the gateway observes).",
    )
    backends: list[Backend] = Field(
        default_factory=list, description="Several backend replicas (JSON list); requests are "
        "routed among them (`routing`). Empty: the one `upstream_url`.",
    )
    routing: Literal["chunk-affinity", "least-loaded", "round-robin"] = Field(
        "chunk-affinity", description="How a miss picks its backend among `backends`.",
    )
    routing_epsilon: float = Field(
        0.2, gt=0, le=4, description="Bounded load: no backend gets more than (1+ε)× its share.",
    )
    routing_window_s: float = Field(
        30.0, gt=0, description="Half-life of the recent-assignment count that measures load.",
    )
    chunk_delimiter: str | None = Field(
        None, description="Also split message texts / prompts into chunks at this string.",
    )
    backend_probe_interval_s: float = Field(
        2.0, gt=0, description="How often backends are probed (health, reuse counters).",
    )
    load_poll_interval_s: float = Field(1.0, gt=0, description="How often the load is updated.")
    load_queue_full: float = Field(
        16, gt=0, description="Backend requests waiting that count as full load."
    )
    load_inflight_full: float = Field(
        64, gt=0, description="Gateway requests in flight upstream that count as full load."
    )
    load_latency_ratio_full: float = Field(
        4.0, gt=1, description="Upstream TTFB over its baseline that counts as full load."
    )

    # --- server ---------------------------------------------------------------------------
    admin_key: SecretStr | None = Field(
        None, description="Key for /admin (Authorization: Bearer or X-Semcache-Admin-Key); "
        "unset or empty: the admin API answers 401.",
    )
    client_header_timeout_s: float = Field(
        10.0, gt=0, description="A connection must send a whole request head within this, "
        "from its start or the end of its last response; else it is closed.",
    )
    client_body_timeout_s: float = Field(
        30.0, gt=0, description="Longest a client may take to send its request body (408).",
    )
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    max_request_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Larger request bodies get 413."
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # --- cache ----------------------------------------------------------------------------
    cache_enabled: bool = Field(True, description="False turns the gateway into a pure proxy.")
    database_url: str = Field(
        "sqlite:///./semcache.db", description="SQLAlchemy URL of the document store."
    )
    auto_migrate: bool = Field(
        True, description="Run Alembic migrations at start-up (turn off when a deploy step does)."
    )
    categories_dir: Path | None = Field(
        None, description="Directory of category YAML files (default: the shipped ones)."
    )
    categories_overlay: Path | None = Field(
        None, description="YAML overlay of per-category overrides (e.g. from `semcache tune`)."
    )
    embedding_model: str | None = Field(
        None, description="sentence-transformers model path (default: packaged all-MiniLM-L6-v2)."
    )
    embedding_device: str = Field("auto", description="auto, cpu, cuda, cuda:1, ...")
    embedding_backend: Literal["auto", "torch", "onnx"] = Field(
        "auto", description="auto: ONNX Runtime on CPU (checked against torch), torch on GPU."
    )
    embedding_cache_dir: Path = Field(
        Path.home() / ".cache" / "semcache", description="Where the ONNX export is kept."
    )
    embedding_threads: int = Field(
        0, ge=0, le=256,
        description="ONNX Runtime threads per process (0: the cores, at most 4; with "
        "`serve --workers N`: the cores / N).",
    )
    embedding_batch_wait_ms: float | None = Field(
        None, ge=0, le=50, description="Longest wait to gather concurrent queries into one "
        "batch. Unset: 2 ms in a gateway process that embeds for itself, 0 in the shared "
        "embedding process (on the GPU a batch is gathered while the last one runs; waiting "
        "for company cost 6-13% of semantic hits/s and 5-8 ms at moderate load on an H200).",
    )
    embedding_max_batch: int = Field(64, ge=1)
    verifier_device: str = Field(
        "auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$",
        description="Where the cross-encoder runs: auto (the GPU when CUDA is there, else the "
        "CPU), cpu (ONNX Runtime, int8) or cuda / cuda:N (torch, fp32, CUDA graphs).",
    )
    embedding_shared: Literal["auto", "on", "off"] = Field(
        "auto", description="With `serve --workers N`: one process embeds for every worker (one "
        "model, batches gathered across the workers). auto: when the model runs on a GPU.",
    )
    embedding_server: str | None = Field(
        None, description="Unix socket of a shared embedding process; `serve` sets it for its "
        "workers.",
    )
    embedding_cuda_graphs: bool = Field(
        True, description="On a GPU, replay each batch shape's forward as a captured CUDA graph.",
    )
    max_query_chars: int = Field(
        4000, ge=64, description="Query text beyond this is cut before embedding; such a query "
        "is served exact repeats only (header says so)."
    )
    classify_min_similarity: float = Field(
        0.25, ge=-1, le=1, description="Below this the request goes to the `general` category."
    )
    classify_margin: float = Field(
        0.06, ge=0, le=1,
        description="Categories scoring within this of the best are searched too.",
    )
    search_top_k: int = Field(5, ge=1, le=100, description="Candidates checked per lookup.")
    verified_repeats: int = Field(
        50_000, ge=0, description="Verified paraphrase hits each worker remembers, so that the "
        "same wording again is served like an exact repeat (no embedding, no verification) while "
        "the entry and the categories stay as they were; 0: off.",
    )
    verifier_calibration: Path | None = Field(
        None, description="The calibrated verifier's model (calibration.json from "
        "`python -m gateway.tools.train_calibrator`); default: the packaged one.",
    )
    sweep_interval_s: float = Field(30.0, gt=0, description="How often expired rows are swept.")
    coalesce: bool = Field(
        True, description="Identical misses in flight share one upstream call."
    )
    responses_ttl_s: float = Field(
        30 * 86400.0, gt=0, description="How long the conversation behind a Responses-API "
        "response id is remembered (previous_response_id).",
    )
    responses_bridge: bool = Field(
        False, description="Serve /v1/responses from a backend that only has chat completions "
        "(llama.cpp's server, older vLLM): requests and answers are translated both ways.",
    )
    coalesce_wait_s: float = Field(
        60.0, gt=0, description="Longest a coalesced request waits before calling upstream itself."
    )
    store_retry_s: float = Field(
        5.0, gt=0, description="After a store failure, pass through this long before retrying.",
    )
    store_lookup_timeout_s: float = Field(
        0.2, gt=0, le=30, description="Longest a request waits for the store to look up a hit; "
        "past it the request passes through (three in a row start a health check; a failed "
        "check opens the breaker).",
    )
    store_writes: Literal["before_reply", "after_reply"] = Field(
        "before_reply", description="before_reply: a miss's answer is committed to the store "
        "before its last byte goes out (a client that saw its answer can count on the next "
        "identical request hitting). after_reply: the write runs beside the reply (a miss "
        "answers sooner; an answer is cached moments later, and one in flight at a crash is "
        "not cached). Either way nothing another request made is ever served.",
    )
    store_timeout_s: float = Field(
        2.0, gt=0, le=60, description="Longest a write, a health check or a SQLite lock wait "
        "may take on the request path; background work gets 15 times as long.",
    )
    index_snapshot_dir: Path | None = Field(
        None, description="Save the HNSW indexes here on shutdown and load them on start "
        "(reconciled with the store) instead of rebuilding: seconds instead of minutes at 1M.",
    )
    replica_sync: bool | None = Field(
        None, description="Follow the store's change log so replicas sharing it see each "
        "other's entries (default: on for PostgreSQL, off for SQLite; `serve --workers` "
        "turns it on).",
    )
    sync_interval_s: float = Field(
        0.2, gt=0, le=10, description="How often a replica polls the change log.",
    )
    change_retention_s: float = Field(
        3600.0, ge=60, description="Changes older than this are pruned; a replica cut off "
        "longer re-reconciles its whole index with the store.",
    )
    default_namespace: str = Field(
        "default", description="Namespace of requests that carry no API key."
    )
    api_key_namespaces: dict[str, str] = Field(
        default_factory=dict,
        description="SHA-256 hex of an API key -> namespace (keys that should share entries).",
    )
    extra_fields: dict[str, Literal["keyed", "shareable", "bypass"]] = Field(
        default_factory=dict,
        description="Request fields outside OpenAI's API that your engine takes (vLLM's top_k, "
        "chat_template_kwargs, ...) -> how the cache treats them; any other unknown field "
        "makes the request bypass.",
    )
    trust_namespace_header: bool = Field(
        False, description="X-Semcache-Namespace names the namespace itself (only behind a "
        "trusted proxy); otherwise it is a sub-namespace of the API key's tenant.",
    )

    def first_backend_url(self) -> str:
        """The backend that unrouted traffic (and the load monitor) uses."""
        return self.backends[0].url if self.backends else self.upstream_url

    def batch_wait_s(self, *, shared_process: bool) -> float:
        """The micro-batcher's wait: the setting, or its default for where it runs."""
        if self.embedding_batch_wait_ms is not None:
            return self.embedding_batch_wait_ms / 1000
        return 0.0 if shared_process else 0.002

    def sync_enabled(self) -> bool:
        if self.replica_sync is not None:
            return self.replica_sync
        return not self.database_url.startswith("sqlite")

    @field_validator("admin_key")
    @classmethod
    def _no_empty_key(cls, v: SecretStr | None) -> SecretStr | None:
        # an unset variable substituted into a compose file gives "": that is no key at all,
        # never one that an empty header matches
        return None if v is None or not v.get_secret_value().strip() else v

    @field_validator("upstream_url")
    @classmethod
    def _strip_slash(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("upstream_url must start with http:// or https://")
        return v.rstrip("/")

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
        config_file = os.environ.get("SEMCACHE_CONFIG")
        if config_file:
            if not Path(config_file).is_file():
                raise FileNotFoundError(f"SEMCACHE_CONFIG={config_file}: no such file")
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
        return tuple(sources)


def server_root(base_url: str) -> str:
    """An OpenAI base URL (``http://host:8000/v1``) without its ``/v1``: where a server such as
    vLLM exposes ``/metrics``."""
    return base_url.removesuffix("/v1")

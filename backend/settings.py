"""The service's settings: one `Settings` read from `SLIMPIPE_*` environment variables, safe local defaults."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from slimpipe import names


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SLIMPIPE_", extra="ignore")

    # Embedded default: a SQLite file; production: postgresql+psycopg://user:pass@host/db
    database_url: str = "sqlite:///./var/slimpipe.db"
    # Embedded default: Celery's filesystem transport (no server) under broker_dir; production: redis://host:6379/0
    broker_url: str = "filesystem://"
    broker_dir: Path = Path("./var/broker")
    # When set, every /api/v1 call needs `Authorization: Bearer <token>`.
    api_token: str | None = None
    # Local data paths in specs (data.options.path / root) must lie inside this folder.
    data_root: Path = Path("./data")
    # Where workers write each run's folder <database id>/run-N (log, metrics, checkpoints; backend/runfiles.py);
    # DELETE /runs/{id} removes it when the API shares the folder (slimpipe serve), a worker removes deleted
    # runs' folders in its periodic recovery pass, and a retry continues from a checkpoint found there.
    runs_dir: Path = Path("./var/runs")
    host: str = "127.0.0.1"
    # Host header names the API answers to (DNS-rebinding defence); "*" answers any. SLIMPIPE_HOST is added.
    allowed_hosts: str = "localhost,127.0.0.1,::1"
    # A run still `queued` (never claimed) this long after it was sent is sent again; the claim skips duplicates.
    requeue_after_s: float = 300.0
    port: int = 8000
    # A running run whose worker has not written a heartbeat for this long is "worker lost".
    heartbeat_timeout_s: float = 120.0
    # While the database is unreachable (restarted, failing over) a run trains on and its worker holds its
    # metrics, logs and final state; after this long without the database a run's end gives up on them.
    database_outage_s: float = Field(600.0, ge=0)
    # `slimpipe serve` and a starting worker wait this long for a database that is still starting (a host's
    # reboot, a compose file starting everything at once); a worker that waited in vain fails the runs its
    # name left running once the database answers, from its periodic sweep.
    database_start_wait_s: float = Field(30.0, ge=0)
    max_body_bytes: int = 32 * 1024 * 1024
    # Comma-separated queues this host's worker consumes, e.g. "cpu" or "gpu,cpu".
    worker_queues: str = names.QUEUE_CPU

    @property
    def queues(self) -> list[str]:
        return [q.strip() for q in self.worker_queues.split(",") if q.strip()]

    @property
    def hosts(self) -> list[str]:
        names_ = [h.strip() for h in self.allowed_hosts.split(",") if h.strip()]
        if self.host not in ("0.0.0.0", "::", ""):
            names_.append(self.host)
        return names_

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def is_embedded_broker(self) -> bool:
        return self.broker_url.startswith("filesystem")

    def broker_transport_options(self) -> dict[str, Any]:
        """Celery `broker_transport_options`: the folders of the embedded transport; empty for Redis."""
        if not self.is_embedded_broker:
            return {}
        root = self.broker_dir.resolve()
        for sub in ("queue", "processed", "control"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(root / "queue"),
            "data_folder_out": str(root / "queue"),
            "processed_folder": str(root / "processed"),
            # Exchange bindings; the transport's default is ./control in whatever the working directory is.
            "control_folder": str(root / "control"),
            "store_processed": False,
            "polling_interval": 0.1,
        }


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings; tests that change the environment call `get_settings.cache_clear()`."""
    return Settings()

"""All configuration in one place: environment variables with defaults."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).resolve() if value else default


def _env_optional_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value).resolve() if value else None


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ValueError(f"{name}: expected an integer, got {value!r}") from exc


@dataclass(frozen=True)
class Settings:
    """Runtime settings; build one per app so tests can override any field."""

    content_dir: Path = field(default_factory=lambda: _env_path("LORALAB_CONTENT_DIR", PROJECT_ROOT / "content"))
    templates_dir: Path = PROJECT_ROOT / "templates"
    static_dir: Path = PROJECT_ROOT / "static"
    site_title: str = "LoRA Lab"
    # Re-read chapters from disk when their files change (handy while writing).
    reload_content: bool = field(default_factory=lambda: os.environ.get("LORALAB_RELOAD_CONTENT", "0") == "1")
    # Where runs and caches live (git-ignored `var/` by default; `/data` in the container).
    data_dir: Path = field(default_factory=lambda: _env_path("LORALAB_DATA_DIR", PROJECT_ROOT / "var"))
    # The lab's base model, SmolLM2-135M-Instruct, as the set-up step caches it (safetensors +
    # tokenizer). Empty: `<data_dir>/models/smollm2-135m-instruct`; a container bakes it elsewhere.
    model_cache_dir: Path | None = field(default_factory=lambda: _env_optional_path("LORALAB_MODEL_CACHE"))
    # A self-hoster's own local causal-LM checkpoint (a folder), used instead of the cached model.
    model_path: Path | None = field(default_factory=lambda: _env_optional_path("LORALAB_MODEL_PATH"))
    # The lab's task: train.jsonl + test.jsonl of {"prompt", "answer"} (data/lora_config/build.py).
    lab_task_dir: Path = field(default_factory=lambda: _env_path("LORALAB_LAB_TASK_DIR", PROJECT_ROOT / "data" / "lora_config"))
    max_queued_jobs: int = field(default_factory=lambda: _env_int("LORALAB_MAX_QUEUED_JOBS", 4))
    job_time_limit_s: int = field(default_factory=lambda: _env_int("LORALAB_JOB_TIME_LIMIT_S", 600))
    # After a cancel or the time limit, how long a step may take to stop before its process is killed.
    job_stop_grace_s: int = field(default_factory=lambda: _env_int("LORALAB_JOB_STOP_GRACE_S", 20))
    # Retention of finished runs (app/lab_store.py): the oldest go first when either bound is passed.
    keep_runs: int = field(default_factory=lambda: _env_int("LORALAB_KEEP_RUNS", 100))
    keep_runs_mib: int = field(default_factory=lambda: _env_int("LORALAB_KEEP_RUNS_MIB", 1024))
    # Threads a training process uses (torch.set_num_threads); 0: every core. Set it when several
    # workers share one machine.
    train_threads: int = field(default_factory=lambda: _env_int("LORALAB_TRAIN_THREADS", 0))
    # Redis URL of a shared queue drained by `loralab worker` processes; empty: train in this process.
    queue_url: str | None = field(default_factory=lambda: os.environ.get("LORALAB_QUEUE_URL") or None)
    # Maths typeset on the server (app.maths): KaTeX's output cached here, Node to fill the cache.
    maths_cache_path: Path = field(
        default_factory=lambda: _env_path("LORALAB_MATHS_CACHE", PROJECT_ROOT / "build" / "katex-cache.json"))
    node_path: str | None = field(default_factory=lambda: os.environ.get("LORALAB_NODE") or shutil.which("node"))
    # "Try it": a reader's prompt, answered by the base and the adapted model (bounded).
    try_max_new_tokens: int = field(default_factory=lambda: _env_int("LORALAB_TRY_MAX_NEW_TOKENS", 64))
    # A run's own answers (held-out before/after, the streamed sample): a slow server may bound them
    # tighter; an answer cut short cannot match exactly, so the default fits every task answer.
    answer_max_new_tokens: int = field(default_factory=lambda: _env_int("LORALAB_ANSWER_MAX_NEW_TOKENS", 64))
    # Start the training process when a reader opens the lab (or a `loralab worker` starts): it
    # imports torch, loads the model and evaluates the base model once while nobody waits.
    # 0: start it with the first run instead (saves ~300 MiB of memory on an idle server).
    warm_trainer: bool = field(default_factory=lambda: _env_int("LORALAB_WARM_TRAINER", 1) != 0)

    @property
    def baseline_dir(self) -> Path:
        """Where the base model's held-out evaluations are kept between runs (training/baseline.py)."""
        return self.data_dir / "cache" / "baselines"

    @property
    def lab_model_dir(self) -> Path:
        """The folder the lab loads its base model from: LORALAB_MODEL_PATH, else the cache."""
        if self.model_path is not None:
            return self.model_path
        return self.model_cache_dir or self.data_dir / "models" / "smollm2-135m-instruct"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment (a FastAPI dependency)."""
    return Settings()

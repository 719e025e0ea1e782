"""Validated configuration for every DAF run (pydantic v2: unknown keys are errors, assignments are checked)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from daf.input_limits import MAX_YAML_BYTES, InputTooLarge, check_size, load_yaml

# Upper bounds: generous for real work, small enough that a typo (an extra zero, 1e30) fails before compute with
# the field named instead of exhausting memory or running for years.
MAX_SEED = 2**32 - 1  # numpy's seed range; torch's is wider
MAX_AGENT_STEPS = 10**13
MAX_EPISODES = 100_000
MAX_LIST = 256  # policies or missions in one pipeline: every pair is evaluated, every pair of policies tested
MAX_TRIALS = 10_000


def _directory_name(value: str) -> str:
    # The name becomes a directory under checkpoint_dir or output_dir: "." and ".." would write beside them.
    if set(value) <= {"."}:
        raise ValueError(f"{value!r} is not a usable directory name")
    return value


# A run's or sweep's name: one path component of letters, digits, '_', '.', '-', not only dots.
DirectoryName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=128), AfterValidator(_directory_name)]


class ConfigError(ValueError):
    """A configuration is invalid; the message names the source, the field and what is allowed."""


class _StrictModel(BaseModel):
    # No inf/nan anywhere: a non-finite learning rate or episode count is never what the user meant.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _bounded(cls, data: Any) -> Any:
        check_size(data, cls.__name__)  # before pydantic or json.dumps would expand shared references
        return data

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]):
        """Load from a YAML file; errors name the file, the field and the allowed values."""
        return cls.from_dict(read_yaml_mapping(path, cls.__name__), source=str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config"):
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, source, cls)) from None

    def to_yaml(self, path: str | os.PathLike[str] | None = None) -> str:
        text = yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text


def read_yaml_mapping(path: str | os.PathLike[str], what: str = "config") -> dict[str, Any]:
    """The mapping in a YAML file (safe_load within daf.input_limits), with one-line errors for a missing,
    malformed or oversized file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    if path.stat().st_size > MAX_YAML_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_YAML_BYTES} bytes")
    try:
        data = load_yaml(path.read_text(), str(path)) or {}
    except InputTooLarge as exc:
        raise ConfigError(str(exc)) from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: malformed YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of {what} fields, got {type(data).__name__}")
    return data


def format_validation_error(exc: ValidationError, source: str, model: type[BaseModel]) -> str:
    """One line per problem: `source: field: message (allowed: ...)`."""
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(root)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            known = ", ".join(sorted(model.model_fields))
            msg = f"unknown key (known keys: {known})"
        elif err["type"] == "literal_error":
            msg = f"{msg} (got {err.get('input')!r})"
        lines.append(f"{source}: {field}: {msg}")
    return "\n".join(lines)


class DAFConfig(_StrictModel):
    """Resources and locations shared by every pipeline."""

    output_dir: str = "daf_output"
    checkpoint_dir: str | None = Field(default=None, description="default (null): <output_dir>/checkpoints")
    max_checkpoints_to_keep: int = Field(default=3, ge=1, le=1000)
    max_parallel_jobs: int = Field(default=1, ge=1, le=256)
    gpu_memory_fraction: float = Field(default=1.0, gt=0.0, le=1.0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = Field(default=42, ge=0, le=MAX_SEED)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    task_runner: Literal["thread", "process", "dask"] = "thread"
    dask_address: str | None = None
    use_cache: bool = True
    refresh_cache: bool = False
    cache_expiration_hours: float | None = Field(default=None, gt=0, le=24 * 365 * 100)

    def checkpoint_root(self) -> Path:
        """Where training runs keep checkpoints: checkpoint_dir when set, else <output_dir>/checkpoints.

        Derived on use rather than stored, so that every way of changing output_dir moves the checkpoints with
        it: a Python override of another config, a CLI flag, a YAML file, and the Prefect UI's run form, which
        submits every field's default (a stored derived default would pin the old output_dir).
        """
        return Path(self.checkpoint_dir) if self.checkpoint_dir else Path(self.output_dir) / "checkpoints"

    def resources(self) -> dict[str, Any]:
        """The DAFConfig fields of this (possibly derived) config, to carry into another pipeline config."""
        return {name: getattr(self, name) for name in DAFConfig.model_fields}


class DAFTrainingConfig(DAFConfig):
    """One PPO training run. Every trainer hyperparameter lives here (CleanRL style)."""

    policy_class_path: str = "lstm"
    policy_data_path: str | None = None
    missions: list[str] = Field(default_factory=lambda: ["training_facility_1"], min_length=1, max_length=MAX_LIST)
    num_training_steps: int = Field(default=200_000, gt=0, le=MAX_AGENT_STEPS, description="agent-steps to train for")
    eval_missions: list[str] = Field(default_factory=list, max_length=MAX_LIST)
    eval_episodes: int = Field(default=10, gt=0, le=MAX_EPISODES)
    run_id: DirectoryName | None = None
    checkpoint_interval: int = Field(
        default=50_000, gt=0, le=MAX_AGENT_STEPS, description="agent-steps between checkpoints"
    )
    torch_threads: int | None = Field(
        default=None,
        ge=1,
        le=1024,
        description="torch threads for the PPO update (default: the cores this process may use); acting in the "
        "rollout always uses 1 thread on CPU",
    )
    progress: bool = True

    # PPO hyperparameters
    learning_rate: float = Field(default=1e-3, ge=0.0, le=1.0)
    anneal_lr: bool = True
    num_envs: int = Field(default=16, ge=1, le=4096)
    num_steps: int = Field(default=64, ge=1, le=4096, description="rollout length per environment")
    gamma: float = Field(default=0.99, gt=0.0, le=1.0)
    gae_lambda: float = Field(default=0.95, ge=0.0, le=1.0)
    num_minibatches: int = Field(default=4, ge=1, le=4096)
    update_epochs: int = Field(default=4, ge=1, le=100)
    norm_adv: bool = True
    clip_coef: float = Field(default=0.2, gt=0.0, le=10.0)
    clip_vloss: bool = True
    ent_coef: float = Field(default=0.01, ge=0.0, le=10.0)
    vf_coef: float = Field(default=0.5, ge=0.0, le=100.0)
    max_grad_norm: float = Field(default=0.5, gt=0.0, le=1e6)
    target_kl: float | None = Field(default=None, gt=0.0, le=100.0)
    bptt_horizon: int = Field(default=16, ge=1, le=4096, description="truncated BPTT length for recurrent policies")
    hidden_size: int = Field(default=128, ge=8, le=4096)

    @model_validator(mode="after")
    def _rollout_divides(self) -> DAFTrainingConfig:
        if self.num_steps % self.bptt_horizon and self.bptt_horizon < self.num_steps:
            raise ValueError(f"num_steps ({self.num_steps}) must be a multiple of bptt_horizon ({self.bptt_horizon})")
        return self


# Fields that change how a run is executed or shown, not what it learns: training's cache key leaves them out.
EXECUTION_FIELDS: frozenset[str] = frozenset(
    {"progress", "use_cache", "refresh_cache", "cache_expiration_hours", "task_runner", "dask_address", "log_level",
     "max_parallel_jobs"}
)  # fmt: skip
# What a resumed training run may change besides: how long and where it trains, how often it keeps checkpoints,
# its evaluation, its device. Anything else would continue the run as another training (daf.training.ppo).
RESUMABLE_CHANGES: frozenset[str] = EXECUTION_FIELDS | {
    "num_training_steps", "checkpoint_interval", "max_checkpoints_to_keep", "eval_missions", "eval_episodes",
    "output_dir", "checkpoint_dir", "run_id", "device", "gpu_memory_fraction", "torch_threads",
}  # fmt: skip

# Fields of DAFTrainingConfig that a sweep may search: the trainer's hyperparameters, not paths or bookkeeping.
HYPERPARAMETERS: frozenset[str] = frozenset(
    name
    for name in DAFTrainingConfig.model_fields
    if name not in DAFConfig.model_fields
    and name
    not in {
        "policy_class_path",
        "policy_data_path",
        "missions",
        "eval_missions",
        "eval_episodes",
        "run_id",
        "checkpoint_interval",
        "torch_threads",
        "progress",
    }
)


class RangeSpec(_StrictModel):
    """A numeric search range: float unless low/high/step are all integers."""

    low: float
    high: float
    log: bool = False
    step: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> RangeSpec:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be < high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("log ranges need low > 0")
        return self

    @property
    def is_int(self) -> bool:
        vals = [self.low, self.high] + ([self.step] if self.step is not None else [])
        return self.step is not None and all(float(v).is_integer() for v in vals)


SearchDimension = list[Any] | RangeSpec


def validate_search_space(space: dict[str, Any]) -> dict[str, SearchDimension]:
    """Lists are categorical, mappings are ranges; names must be DAFTrainingConfig hyperparameters."""
    if not space:
        raise ValueError("search_space is empty: give at least one hyperparameter")
    out: dict[str, SearchDimension] = {}
    for name, dim in space.items():
        if name not in HYPERPARAMETERS:
            allowed = ", ".join(sorted(HYPERPARAMETERS))
            raise ValueError(f"search_space.{name}: not a DAFTrainingConfig hyperparameter (allowed: {allowed})")
        if isinstance(dim, RangeSpec):
            out[name] = dim
        elif isinstance(dim, dict):
            try:
                out[name] = RangeSpec.model_validate(dim)
            except ValidationError as exc:
                raise ValueError(f"search_space.{name}: {format_validation_error(exc, 'range', RangeSpec)}") from None
        elif isinstance(dim, list | tuple):
            if not dim:
                raise ValueError(f"search_space.{name}: empty list of values")
            values = list(dim)
            for value in values:
                try:
                    DAFTrainingConfig.model_validate({name: value})
                except ValidationError as exc:
                    msg = exc.errors()[0]["msg"]
                    raise ValueError(f"search_space.{name}: value {value!r} is invalid: {msg}") from None
            out[name] = values
        else:
            raise ValueError(f"search_space.{name}: expected a list of values or a {{low, high, log, step}} range")
    return out


class DAFSweepConfig(DAFConfig):
    """A hyperparameter search where every trial trains and is evaluated."""

    name: DirectoryName = "sweep"
    policy_class_path: str = "lstm"
    policy_data_path: str | None = None
    missions: list[str] = Field(default_factory=lambda: ["training_facility_1"], min_length=1, max_length=MAX_LIST)
    search_space: dict[str, Any]
    strategy: Literal["grid", "random", "bayesian"] = "grid"
    num_trials: int | None = Field(default=None, ge=1, le=MAX_TRIALS, description="default: grid size, or 10")
    episodes_per_trial: int = Field(default=5, ge=1, le=MAX_EPISODES)
    training_steps_per_trial: int = Field(default=50_000, gt=0, le=MAX_AGENT_STEPS)
    max_agent_steps: int | None = Field(
        default=None, gt=0, le=MAX_AGENT_STEPS, description="compute budget: agent-steps all trials together may train"
    )
    eval_interval_steps: int | None = Field(
        default=None, gt=0, le=MAX_AGENT_STEPS, description="intermediate evaluations for pruning"
    )
    pruner_warmup_steps: int | None = Field(
        default=None,
        gt=0,
        le=MAX_AGENT_STEPS,
        description="no pruning verdict before these agent-steps; default: a quarter of the budget",
    )
    objective: Literal["mean", "iqm"] = "mean"
    optimize_direction: Literal["maximize", "minimize"] = "maximize"
    pruner: Literal["median", "hyperband", "none"] = "median"
    storage: str | None = Field(
        default=None, description="SQLAlchemy URL; default: SQLite under the sweep's output dir"
    )
    training: dict[str, Any] = Field(default_factory=dict, description="fixed DAFTrainingConfig overrides")

    @field_validator("search_space")
    @classmethod
    def _check_space(cls, value: dict[str, Any]) -> dict[str, Any]:
        validate_search_space(value)
        return value

    @field_validator("training")
    @classmethod
    def _check_training(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            DAFTrainingConfig.model_validate(value)
        except ValidationError as exc:
            raise ValueError(format_validation_error(exc, "training", DAFTrainingConfig)) from None
        return value

    def grid_size(self) -> int | None:
        space = validate_search_space(self.search_space)
        if any(isinstance(d, RangeSpec) for d in space.values()):
            return None
        size = 1
        for dim in space.values():
            size *= len(dim)
        return size

    @model_validator(mode="after")
    def _fit_the_trial_budget(self) -> DAFSweepConfig:
        budget = f"training_steps_per_trial ({self.training_steps_per_trial})"
        if self.pruner_warmup_steps is not None and self.pruner_warmup_steps >= self.training_steps_per_trial:
            raise ValueError(
                f"pruner_warmup_steps ({self.pruner_warmup_steps}) must be below {budget}: no trial could be pruned"
            )
        if self.max_agent_steps is not None and self.max_agent_steps < self.training_steps_per_trial:
            raise ValueError(f"max_agent_steps ({self.max_agent_steps}) is below {budget}: no trial could start")
        return self

    def pruner_warmup(self) -> int:
        """Agent-steps before the pruner may judge a trial."""
        return self.pruner_warmup_steps or max(1, self.training_steps_per_trial // 4)

    @model_validator(mode="after")
    def _grid_fits(self) -> DAFSweepConfig:
        if self.strategy == "grid":
            if self.grid_size() is None:
                raise ValueError("strategy 'grid' needs every search_space entry to be a list of values")
            if self.num_trials is not None and self.num_trials > self.grid_size():
                raise ValueError(f"num_trials ({self.num_trials}) exceeds the grid size ({self.grid_size()})")
            if self.num_trials is None and self.grid_size() > MAX_TRIALS:
                raise ValueError(
                    f"the grid has {self.grid_size()} points, more than {MAX_TRIALS} trials: set num_trials or use "
                    "strategy 'random' or 'bayesian'"
                )
        return self

    def total_trials(self) -> int:
        if self.num_trials is not None:
            return self.num_trials
        return self.grid_size() if self.strategy == "grid" else 10


class PolicyEntry(_StrictModel):
    """A policy to evaluate: mettagrid's PolicySpec fields plus an optional display name."""

    class_path: str
    data_path: str | None = None
    init_kwargs: dict[str, Any] = Field(default_factory=dict)
    name: str | None = None


class DAFComparisonConfig(DAFConfig):
    policies: list[PolicyEntry] = Field(min_length=1, max_length=MAX_LIST)
    missions: list[str] = Field(min_length=1, max_length=MAX_LIST)
    episodes_per_mission: int = Field(default=10, ge=1, le=MAX_EPISODES)
    alpha: float = Field(default=0.05, gt=0.0, lt=1.0)
    correction: Literal["holm", "bh"] = "holm"
    parallel_evaluation: bool = False
    report_title: str = "DAF comparison report"


class DAFBenchmarkConfig(DAFConfig):
    policies: list[PolicyEntry] = Field(min_length=1, max_length=MAX_LIST)
    missions: list[str] = Field(min_length=1, max_length=MAX_LIST)
    episodes_per_mission: int = Field(default=10, ge=1, le=MAX_EPISODES)
    training_missions: list[str] | None = Field(default=None, max_length=MAX_LIST)
    training_steps: int = Field(default=100_000, gt=0, le=MAX_AGENT_STEPS)
    training: dict[str, Any] = Field(default_factory=dict, description="DAFTrainingConfig overrides for training")
    compare_baselines: bool = True
    baselines: list[str] = Field(default_factory=lambda: ["baseline", "random"], max_length=MAX_LIST)
    create_deployment_package: bool = False
    alpha: float = Field(default=0.05, gt=0.0, lt=1.0)
    correction: Literal["holm", "bh"] = "holm"
    parallel_evaluation: bool = False

    @field_validator("policies", mode="before")
    @classmethod
    def _names_to_entries(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"class_path": v} if isinstance(v, str) else v for v in value]
        return value

    @field_validator("training")
    @classmethod
    def _check_training(cls, value: dict[str, Any]) -> dict[str, Any]:
        return DAFSweepConfig._check_training(value)

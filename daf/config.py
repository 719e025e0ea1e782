"""Validated configuration for every DAF run (pydantic v2: unknown keys are errors, assignments are checked).

The seed's `daf.config`: every pipeline's config model, its bounds and each field's roles (`Role`, from which the
lists of hyperparameters, cache-key and resumable fields are derived). One module of ~420 lines because the
models inherit from one another and are read side by side; the YAML reading and size limits live in
daf.input_limits.
"""

from __future__ import annotations

import enum
import functools
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import to_jsonable_python

from daf.errors import InputError
from daf.input_limits import MAX_YAML_BYTES, InputTooLarge, check_size, load_yaml
from daf.mission_mix import assign_missions
from daf.result_store import check_store_url

# Upper bounds: generous for real work, small enough that a typo (an extra zero, 1e30) fails before compute with
# the field named instead of exhausting memory or running for years.
MAX_SEED = 2**32 - 1  # numpy's seed range; torch's is wider
MAX_AGENT_STEPS = 10**13
MAX_EPISODES = 100_000
MAX_LIST = 256  # policies or missions in one pipeline: every pair is evaluated, every pair of policies tested
MAX_TRIALS = 10_000
# Environment-steps in one rollout (num_envs x num_steps), each bounded alone: the rollout buffers hold every agent's
# observation at each of them (4096 x 4096 asked torch for 100 GB). 2^18 is 256x the default's 1,024.
MAX_ROLLOUT_ENV_STEPS = 1 << 18


def _directory_name(value: str) -> str:
    # The name becomes a directory under checkpoint_dir or output_dir: "." and ".." would write beside them.
    if set(value) <= {"."}:
        raise ValueError(f"{value!r} is not a usable directory name")
    return value


# A run's or sweep's name: one path component of letters, digits, '_', '.', '-', not only dots.
DirectoryName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=128), AfterValidator(_directory_name)]


class Role(enum.Enum):
    """What a config field is for, tagged once where the field is defined (`Annotated[type, Role.X]`): the field
    lists (HYPERPARAMETERS, EXECUTION_FIELDS, RESUMABLE_CHANGES, and in daf.sweeps the fields a trial sets and a
    study's fingerprint) are derived from the tags, and tests/test_config.py fails on a field without one."""

    HYPERPARAMETER = "hyperparameter"  # a trainer hyperparameter: a sweep may search it
    SWEEP_OWNED = "sweep_owned"  # set by every sweep trial itself: a sweep's `training` override of it would be lost
    EXECUTION = "execution"  # how a run is executed or shown, not what it learns: outside training's cache key
    RESUMABLE = "resumable"  # besides the EXECUTION fields, what a resumed training run may change
    FINGERPRINT = "fingerprint"  # a sweep setting that defines what a trial's value means: a continued study keeps it
    SWEEP_CONTROL = "sweep_control"  # which study a sweep is, how far it runs, how it prunes: may change on continuing


def check_output_location(value: str) -> str:
    """The output directory as given; a ValueError for the file system's root. DAF writes only into folders of its
    own below output_dir (runs/, evaluations/, checkpoints/, ...), but the root is never what anyone meant: it is
    almost always an empty variable expanded into a path."""
    if Path(value).expanduser().absolute() == Path("/"):
        raise ValueError("the file system's root is not an output directory; name a directory for DAF's outputs")
    return value


def fields_with(model: type[BaseModel], role: Role) -> frozenset[str]:
    """The names of `model`'s fields tagged with `role`."""
    return frozenset(name for name, info in model.model_fields.items() if role in info.metadata)


class ConfigError(InputError, ValueError):
    """A configuration is invalid; the message names the source, the field and what is allowed."""


def _form_layout(schema: dict[str, Any], model: type[BaseModel]) -> None:
    """Number the fields of a config's JSON schema (`position`, the key the Prefect UI's run form sorts by): nothing
    else keeps their order there, since a PostgreSQL-backed server stores the schema as jsonb, which orders object
    keys by length. A pipeline's own fields come first (what the run is: policies, missions, episodes, steps), the
    DAFConfig fields every pipeline shares after them (where and how it runs)."""
    shared = [name for name in DAFConfig.model_fields if name in model.model_fields]
    order = [name for name in model.model_fields if name not in shared] + shared
    properties = schema.get("properties", {})
    schema["properties"] = {
        name: {**properties[name], "position": i} for i, name in enumerate(order) if name in properties
    }
    # pydantic leaves a default_factory's value out of the schema, and the form submits what it shows: an empty
    # `baselines` would silently compare against none.
    for name, field in model.model_fields.items():
        if name in schema["properties"] and field.default_factory is not None:
            schema["properties"][name].setdefault("default", to_jsonable_python(field.default_factory()))


class _StrictModel(BaseModel):
    # No inf/nan anywhere: a non-finite learning rate or episode count is never what the user meant. A field's
    # docstring is its description (in the JSON schema, so in the Prefect UI's run form too).
    model_config = ConfigDict(
        extra="forbid",
        validate_assignment=True,
        allow_inf_nan=False,
        use_attribute_docstrings=True,
        json_schema_extra=_form_layout,
    )

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

    output_dir: Annotated[Annotated[str, AfterValidator(check_output_location)], Role.RESUMABLE] = "daf_output"
    """Where runs, reports, bundles and (by default) checkpoints are written; relative to the working directory of the
    run.
    """
    checkpoint_dir: Annotated[str | None, Role.SWEEP_OWNED, Role.RESUMABLE] = Field(
        default=None, description="where training runs keep checkpoints (default: output_dir/checkpoints)"
    )
    max_checkpoints_to_keep: Annotated[int, Role.RESUMABLE] = Field(default=3, ge=1, le=1000)
    """Checkpoints a training run keeps (older ones are deleted; the final one is always kept)."""
    max_parallel_jobs: Annotated[int, Role.EXECUTION] = Field(default=1, ge=1, le=256)
    """Evaluations or sweep trials that may run at once."""
    # A sweep divides it among its max_parallel_jobs trials (one shared GPU) unless `training` sets it (a GPU each).
    gpu_memory_fraction: Annotated[float, Role.RESUMABLE] = Field(default=1.0, gt=0.0, le=1.0)
    """Share of the GPU's memory a training process may use."""
    device: Annotated[Literal["auto", "cpu", "cuda"], Role.RESUMABLE] = "auto"
    """Where torch computes: auto (CUDA when available), cpu or cuda."""
    seed: Annotated[int, Role.SWEEP_OWNED, Role.FINGERPRINT] = Field(default=42, ge=0, le=MAX_SEED)
    """Seed of every random draw: training, episode maps, evaluation, search."""
    log_level: Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"], Role.EXECUTION] = "INFO"
    """Level of DAF's log lines."""
    task_runner: Annotated[Literal["thread", "process", "dask"], Role.EXECUTION] = "thread"
    """Where evaluations and sweep trials run: thread (this process), process (child processes) or dask (the cluster at
    dask_address).
    """
    dask_address: Annotated[str | None, Role.EXECUTION] = None
    """Dask scheduler address (tcp://host:port) for task_runner dask; one the machine running the flow lists in
    DAF_DASK_ADDRESSES (checked there, by the environment validation: a config travels to Dask workers and
    process pools, which need not list it)."""
    use_cache: Annotated[bool, Role.EXECUTION] = True
    """Reuse the results of identical tasks from earlier runs (keyed on the content of what they read)."""
    refresh_cache: Annotated[bool, Role.EXECUTION] = False
    """Compute every task again and overwrite its cached result."""
    cache_expiration_hours: Annotated[float | None, Role.EXECUTION] = Field(default=None, gt=0, le=24 * 365 * 100)
    """Cached results older than this are computed again (default: they never expire)."""
    result_store: Annotated[Annotated[str, AfterValidator(check_store_url)] | None, Role.EXECUTION] = Field(
        default=None, max_length=2048
    )
    """Also keep each run's outputs (result, reports, bundle, checkpoints) in this store, to open them from anywhere:
    s3://bucket/prefix (or gs://, az://, file:///abs/path); credentials come from the provider's environment.
    Default: only output_dir."""

    def checkpoint_root(self) -> Path:
        """Where training runs keep checkpoints: checkpoint_dir when set, else <output_dir>/checkpoints.

        Derived on use rather than stored, so that every way of changing output_dir moves the checkpoints with
        it: a Python override of another config, a CLI flag, a YAML file, and the Prefect UI's run form, which
        submits every field's default (a stored derived default would pin the old output_dir).
        """
        # Absolute (against the working directory now): the paths a run reports must mean the same thing wherever
        # they are read (the UI, another process, a stored pipeline_result.json).
        return (Path(self.checkpoint_dir) if self.checkpoint_dir else Path(self.output_dir) / "checkpoints").absolute()

    def resources(self) -> dict[str, Any]:
        """The DAFConfig fields of this (possibly derived) config, to carry into another pipeline config."""
        return {name: getattr(self, name) for name in DAFConfig.model_fields}


class DAFTrainingConfig(DAFConfig):
    """One PPO training run. Every trainer hyperparameter lives here (CleanRL style)."""

    policy_class_path: Annotated[str, Role.SWEEP_OWNED] = "lstm"
    """Policy to train: a registered name (lstm, mlp; `daf policies` lists them) or the dotted path of a mettagrid
    MultiAgentPolicy class.
    """
    policy_data_path: Annotated[str | None, Role.SWEEP_OWNED] = None
    """Weights to start from (a DAF checkpoint): a warm start, e.g. a ladder of missions."""
    missions: Annotated[list[str], Role.SWEEP_OWNED] = Field(
        default_factory=lambda: ["training_facility_1"], min_length=1, max_length=MAX_LIST
    )
    """Training missions: built-in names (`daf missions` lists them), or mission YAML files from Python and the CLI."""
    mission_weights: Annotated[list[Annotated[float, Field(gt=0.0, le=1e6)]] | None, Role.HYPERPARAMETER] = Field(
        default=None,
        max_length=MAX_LIST,
        description="one weight per training mission: its share of the num_envs environments (default: equal); "
        "see daf/mission_mix.py",
    )
    reward_shaping: Annotated[
        dict[Annotated[str, Field(min_length=1, max_length=128)], Annotated[float, Field(gt=0.0, le=1.0)]],
        Role.HYPERPARAMETER,
    ] = Field(
        default_factory=dict,
        max_length=MAX_LIST,
        description="a reward per unit held, by inventory item, in training environments only (picking one up earns "
        "it, spending it pays it back): potential-based shaping for missions whose reward ends a chain, e.g. "
        "{ore: 0.25}; evaluation scores the mission's own reward. See daf/reward_shaping.py",
    )
    # Not a searchable hyperparameter: each sweep trial trains for the sweep's training_steps_per_trial.
    num_training_steps: Annotated[int, Role.SWEEP_OWNED, Role.RESUMABLE] = Field(
        default=200_000, gt=0, le=MAX_AGENT_STEPS, description="agent-steps to train for"
    )
    eval_missions: Annotated[list[str], Role.RESUMABLE] = Field(default_factory=list, max_length=MAX_LIST)
    """Missions to evaluate the trained policy on (empty: no evaluation stage)."""
    eval_episodes: Annotated[int, Role.RESUMABLE] = Field(default=10, gt=0, le=MAX_EPISODES)
    """Episodes per evaluation mission."""
    run_id: Annotated[DirectoryName | None, Role.SWEEP_OWNED, Role.RESUMABLE] = None
    """Name of the run's checkpoint folder; a run_id that has checkpoints resumes from its last one (default: a new
    name).
    """
    checkpoint_interval: Annotated[int, Role.RESUMABLE] = Field(
        default=50_000, gt=0, le=MAX_AGENT_STEPS, description="agent-steps between checkpoints"
    )
    torch_threads: Annotated[int | None, Role.RESUMABLE] = Field(
        default=None,
        ge=1,
        le=1024,
        description="torch threads for the PPO update (default: the cores this process may use); acting in the "
        "rollout always uses 1 thread on CPU",
    )
    progress: Annotated[bool, Role.EXECUTION, Role.SWEEP_OWNED] = True
    """Show a progress bar."""
    num_env_workers: Annotated[int, Role.RESUMABLE] = Field(
        default=0,
        ge=0,
        le=256,
        description="processes that step the environments, each a contiguous share of num_envs (0: the learner's "
        "own process steps them); see daf/vecenv/pool.py",
    )
    env_overlap: Annotated[bool, Role.RESUMABLE] = Field(
        default=True,
        description="with env workers: step half of the environments while the learner acts on the other half "
        "(faster; the same seed gives the same weights for any num_env_workers of 1 or more); false: act on all rows "
        "at once, giving exactly the weights of in-process stepping",
    )

    # PPO hyperparameters
    # 2e-3 (bench/README.md, "The default learning rate moves to 2e-3", issue #20; bench/learning.py, 20 episodes,
    # seed 42): `mlp` on assembler_1 at 5M agent-steps scored 67.2 / 69.7 on seeds 0 / 1 (82% of `baseline`; 3e-3:
    # 40.5 / 36.2, 46%). On the facilities at 1M it costs little: training_facility_1 392.9 / 406.9 (3e-3: 399.4 /
    # 399.8), `_2` over seeds 0-3 488.5 (3e-3: 514.8; `baseline` 530.8); `lstm` 419.6 / 404.6 and 503.0 / 484.1
    # (3e-3: 396.5 / 418.9, 537.2 / 471.2). 1e-3 keeps training_facility_1 only just above `baseline` (363.1); 1e-2
    # collapsed the LSTM (55 at 1M); an earlier sweep's 1e-2 optimum was for 262k-step trials, whose annealing lowers
    # the rate faster.
    learning_rate: Annotated[float, Role.HYPERPARAMETER] = Field(default=2e-3, ge=0.0, le=1.0)
    """Adam's learning rate."""
    anneal_lr: Annotated[bool, Role.HYPERPARAMETER] = True
    """Lower the learning rate linearly to 0 over the run."""
    num_envs: Annotated[int, Role.HYPERPARAMETER] = Field(default=16, ge=1, le=4096)
    """Environments stepped in parallel."""
    num_steps: Annotated[int, Role.HYPERPARAMETER] = Field(
        default=64, ge=1, le=4096, description="rollout length per environment"
    )
    gamma: Annotated[float, Role.HYPERPARAMETER] = Field(default=0.99, gt=0.0, le=1.0)
    """Discount factor."""
    gae_lambda: Annotated[float, Role.HYPERPARAMETER] = Field(default=0.95, ge=0.0, le=1.0)
    """GAE lambda: the bias-variance trade-off of the advantage estimate."""
    num_minibatches: Annotated[int, Role.HYPERPARAMETER] = Field(default=4, ge=1, le=4096)
    """Minibatches per update epoch."""
    # 8, not 4: bench/learning.py, `mlp`, seeds 0 and 1 at 1M agent-steps: training_facility_1 399 / 400 (4 epochs:
    # 385 / 381; `baseline` 357), training_facility_2 547 / 491 (485 / 455; `baseline` 531). Each update costs twice
    # the compute; 8 minibatches of 4 epochs (as many optimizer steps) did not help (477 on _2), nor did gamma 0.995,
    # ent_coef 0.02, gae_lambda 0.9, hidden_size 256 or 64 environments on assembler_1 (bench/README.md, issue #20).
    update_epochs: Annotated[int, Role.HYPERPARAMETER] = Field(default=8, ge=1, le=100)
    """Passes over each rollout per update."""
    norm_adv: Annotated[bool, Role.HYPERPARAMETER] = True
    """Normalise advantages per minibatch."""
    norm_reward: Annotated[bool, Role.HYPERPARAMETER] = Field(
        default=False,
        description="divide rewards by the running std of the discounted return (daf/training/reward_scale.py)",
    )
    clip_coef: Annotated[float, Role.HYPERPARAMETER] = Field(default=0.2, gt=0.0, le=10.0)
    """PPO's clipping range of the probability ratio."""
    clip_vloss: Annotated[bool, Role.HYPERPARAMETER] = True
    """Clip the value loss as PPO clips the policy loss."""
    ent_coef: Annotated[float, Role.HYPERPARAMETER] = Field(default=0.01, ge=0.0, le=10.0)
    """Weight of the entropy bonus."""
    # Off by default, measured by bench/learning.py at 1M agent-steps (seeds 0 / 1, constant bonus in brackets): it
    # hurt the LSTM, the default class, on training_facility_2, 497.0 / 434.6 (537.2 / 471.2; `baseline` 530.8), and
    # left training_facility_1 as it was (393.4 / 406.8 vs 396.5 / 418.9); the MLP moved within the seeds' spread
    # (_2: 545.9 / 501.8 vs 546.9 / 490.9; assembler_1 at 5M: 45.0 / 35.2 vs 40.5 / 36.2; bench/README.md, #20).
    anneal_ent: Annotated[bool, Role.HYPERPARAMETER] = Field(
        default=False, description="lower ent_coef linearly to 0 over the run, as anneal_lr lowers the learning rate"
    )
    vf_coef: Annotated[float, Role.HYPERPARAMETER] = Field(default=0.5, ge=0.0, le=100.0)
    """Weight of the value loss."""
    max_grad_norm: Annotated[float, Role.HYPERPARAMETER] = Field(default=0.5, gt=0.0, le=1e6)
    """Gradients are clipped to this global norm."""
    target_kl: Annotated[float | None, Role.HYPERPARAMETER] = Field(default=None, gt=0.0, le=100.0)
    """Stop an update's epochs early once the approximate KL exceeds this (default: never)."""
    bptt_horizon: Annotated[int, Role.HYPERPARAMETER] = Field(
        default=16, ge=1, le=4096, description="truncated BPTT length for recurrent policies"
    )
    hidden_size: Annotated[int, Role.HYPERPARAMETER] = Field(default=128, ge=8, le=4096)
    """Width of the policy network's hidden layers."""
    overlap_update: Annotated[bool, Role.HYPERPARAMETER] = Field(
        default=False,
        description="collect the next rollout during the PPO update, acting with the weights from before it (one "
        "update of policy lag, corrected as decoupled PPO; pair it with num_env_workers); see "
        "daf/training/collector.py",
    )

    @model_validator(mode="after")
    def _rollout_divides(self) -> DAFTrainingConfig:
        if self.num_steps % self.bptt_horizon and self.bptt_horizon < self.num_steps:
            raise ValueError(f"num_steps ({self.num_steps}) must be a multiple of bptt_horizon ({self.bptt_horizon})")
        # A listed mission that no environment runs would be silently left out of training.
        unused = set(self.missions) - set(assign_missions(self.missions, self.mission_weights, self.num_envs))
        if unused:
            weights = f" and mission_weights {self.mission_weights}" if self.mission_weights else ""
            raise ValueError(
                f"with num_envs {self.num_envs}{weights}, no environment runs {sorted(unused)}: raise num_envs"
                + (" or its weight" if weights else "")
            )
        if self.num_envs * self.num_steps > MAX_ROLLOUT_ENV_STEPS:
            raise ValueError(
                f"num_envs x num_steps ({self.num_envs} x {self.num_steps} = {self.num_envs * self.num_steps}) is over "
                f"{MAX_ROLLOUT_ENV_STEPS} environment-steps per rollout: its buffers would not fit in memory"
            )
        if self.num_env_workers > self.num_envs:
            raise ValueError(
                f"num_env_workers ({self.num_env_workers}) must not exceed num_envs ({self.num_envs}): each worker "
                "steps at least one environment"
            )
        return self


# Fields that change how a run is executed or shown, not what it learns: training's cache key leaves them out.
EXECUTION_FIELDS: frozenset[str] = fields_with(DAFTrainingConfig, Role.EXECUTION)
# What a resumed training run may change: those, how long and where it trains, how often it keeps checkpoints, its
# evaluation, its device. Anything else would continue the run as another training (see
# daf.training.validation.check_resumable).
RESUMABLE_CHANGES: frozenset[str] = EXECUTION_FIELDS | fields_with(DAFTrainingConfig, Role.RESUMABLE)
# Fields of DAFTrainingConfig that a sweep may search: the trainer's hyperparameters, not paths or bookkeeping.
HYPERPARAMETERS: frozenset[str] = fields_with(DAFTrainingConfig, Role.HYPERPARAMETER)


class RangeSpec(_StrictModel):
    """A numeric search range: float unless low/high/step are all integers."""

    low: float
    """Lowest value."""
    high: float
    """Highest value."""
    log: bool = False
    """Sample on a log scale."""
    step: float | None = Field(default=None, gt=0)
    """Spacing of the values (integers when low, high and step are all whole)."""

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


@functools.cache
def _field_adapter(name: str) -> TypeAdapter:
    """The field's own type and bounds, without the rules between fields: those need the sweep's whole training
    config, and daf.sweeps checks every value in it (a mix's weights need its missions, bptt_horizon num_steps)."""
    field = DAFTrainingConfig.model_fields[name]
    return TypeAdapter(Annotated[field.annotation, *field.metadata], config=ConfigDict(allow_inf_nan=False))


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
                    _field_adapter(name).validate_python(value)
                except ValidationError as exc:
                    msg = exc.errors()[0]["msg"]
                    raise ValueError(f"search_space.{name}: value {value!r} is invalid: {msg}") from None
            out[name] = values
        else:
            raise ValueError(f"search_space.{name}: expected a list of values or a {{low, high, log, step}} range")
    return out


class DAFSweepConfig(DAFConfig):
    """A hyperparameter search where every trial trains and is evaluated."""

    name: Annotated[DirectoryName, Role.SWEEP_CONTROL] = "sweep"
    """The study's name: a sweep with the same name and output_dir continues it."""
    policy_class_path: Annotated[str, Role.FINGERPRINT] = "lstm"
    """Policy every trial trains: a registered name or the dotted path of a mettagrid MultiAgentPolicy class."""
    policy_data_path: Annotated[str | None, Role.FINGERPRINT] = None
    """Weights every trial starts from (a DAF checkpoint)."""
    missions: Annotated[list[str], Role.FINGERPRINT] = Field(
        default_factory=lambda: ["training_facility_1"], min_length=1, max_length=MAX_LIST
    )
    """Missions every trial trains and is scored on: built-in names, or mission YAML files from Python and the CLI."""
    search_space: Annotated[dict[str, Any], Role.FINGERPRINT]
    """Hyperparameters to search: a list of values, or a range {low, high, log, step}; names are DAFTrainingConfig
    hyperparameters.
    """
    strategy: Annotated[Literal["grid", "random", "bayesian"], Role.FINGERPRINT] = "grid"
    """grid (every combination), random, or bayesian (Optuna's TPE)."""
    num_trials: Annotated[int | None, Role.SWEEP_CONTROL] = Field(
        default=None, ge=1, le=MAX_TRIALS, description="default: grid size, or 10"
    )
    episodes_per_trial: Annotated[int, Role.FINGERPRINT] = Field(default=5, ge=1, le=MAX_EPISODES)
    """Evaluation episodes per mission that score a trial."""
    training_steps_per_trial: Annotated[int, Role.FINGERPRINT] = Field(default=50_000, gt=0, le=MAX_AGENT_STEPS)
    """Agent-steps each trial trains for."""
    max_agent_steps: Annotated[int | None, Role.SWEEP_CONTROL] = Field(
        default=None, gt=0, le=MAX_AGENT_STEPS, description="compute budget: agent-steps all trials together may train"
    )
    eval_interval_steps: Annotated[int | None, Role.SWEEP_CONTROL] = Field(
        default=None, gt=0, le=MAX_AGENT_STEPS, description="intermediate evaluations for pruning"
    )
    pruner_warmup_steps: Annotated[int | None, Role.SWEEP_CONTROL] = Field(
        default=None,
        gt=0,
        le=MAX_AGENT_STEPS,
        description="no pruning verdict before these agent-steps; default: a quarter of the budget",
    )
    objective: Annotated[Literal["mean", "iqm"], Role.FINGERPRINT] = "mean"
    """A trial's score over its episodes: mean, or iqm (interquartile mean)."""
    optimize_direction: Annotated[Literal["maximize", "minimize"], Role.FINGERPRINT] = "maximize"
    """Whether a higher or a lower score is better."""
    pruner: Annotated[Literal["median", "hyperband", "none"], Role.SWEEP_CONTROL] = "median"
    """Stop unpromising trials early: median, hyperband, or none."""
    storage: Annotated[str | None, Role.SWEEP_CONTROL] = Field(
        default=None, description="SQLAlchemy URL; default: SQLite under the sweep's output dir"
    )
    training: Annotated[dict[str, Any], Role.FINGERPRINT] = Field(
        default_factory=dict, description="fixed DAFTrainingConfig overrides"
    )

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
    """A registered policy name (`daf policies`) or the dotted path of a mettagrid MultiAgentPolicy class."""
    data_path: str | None = None
    """The policy's weights (a DAF checkpoint or bundle), if it has any."""
    init_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments for the policy class."""
    name: str | None = None
    """Name shown in reports (default: derived from the class and weights)."""


class DAFComparisonConfig(DAFConfig):
    policies: list[PolicyEntry] = Field(min_length=1, max_length=MAX_LIST)
    """Policies to compare, each with its weights if it has any."""
    missions: list[str] = Field(min_length=1, max_length=MAX_LIST)
    """Missions every policy is evaluated on: built-in names, or mission YAML files from Python and the CLI."""
    episodes_per_mission: int = Field(default=10, ge=1, le=MAX_EPISODES)
    """Episodes per policy and mission (the same seeds, so the same maps, for every policy)."""
    alpha: float = Field(default=0.05, gt=0.0, lt=1.0)
    """Significance level of the pairwise tests."""
    correction: Literal["holm", "bh"] = "holm"
    """Correction for testing many pairs: holm (family-wise error) or bh (false discovery rate)."""
    parallel_evaluation: bool = False
    """Run the evaluations at once, up to max_parallel_jobs."""
    report_title: str = "DAF comparison report"
    """Title of the HTML report."""


class DAFBenchmarkConfig(DAFConfig):
    policies: list[PolicyEntry] = Field(min_length=1, max_length=MAX_LIST)
    """Policies to benchmark: a trainable one without weights is trained first."""
    missions: list[str] = Field(min_length=1, max_length=MAX_LIST)
    """Missions every policy is evaluated on: built-in names, or mission YAML files from Python and the CLI."""
    episodes_per_mission: int = Field(default=10, ge=1, le=MAX_EPISODES)
    """Episodes per policy and mission."""
    training_missions: list[str] | None = Field(default=None, max_length=MAX_LIST)
    """Missions to train on (default: the evaluation missions)."""
    training_steps: int = Field(default=100_000, gt=0, le=MAX_AGENT_STEPS)
    """Agent-steps each policy without weights trains for."""
    training: dict[str, Any] = Field(default_factory=dict, description="DAFTrainingConfig overrides for training")
    compare_baselines: bool = True
    """Evaluate the baselines beside the policies."""
    baselines: list[str] = Field(default_factory=lambda: ["baseline", "random"], max_length=MAX_LIST)
    """Reference policies compared with: registered names."""
    create_deployment_package: bool = False
    """Package the best policy as a validated bundle."""
    alpha: float = Field(default=0.05, gt=0.0, lt=1.0)
    """Significance level of the pairwise tests."""
    correction: Literal["holm", "bh"] = "holm"
    """Correction for testing many pairs: holm (family-wise error) or bh (false discovery rate)."""
    parallel_evaluation: bool = False
    """Run the evaluations at once, up to max_parallel_jobs."""

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

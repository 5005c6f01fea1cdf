"""The sweep file: its schema, and how it expands into cells (one resolved run config each).

    sweep = load_sweep("sweeps/tiny_grid.yaml")
    for cell in sweep.cells:
        cell.key, cell.axes, cell.overrides, cell.config   # overrides: `key=value` for `harness train`

A cell is the run config `base` + `set` + `eval` + its axis values + every matching conditional
override, in that order (later wins). Every cell is validated through harness.config here, so a
bad sweep file fails before a storage, a folder or an MLflow run exists; errors name the sweep
file and the key path in it (e.g. `overrides[2].set.dpo.beta`). The grid's axes, exclusions and
cell keys are harness/sweep/grid.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from harness.config import (
    AXIS_KEYS,
    RunConfig,
    apply_override,
    flatten,
    format_interval,
    parse_interval,
    parse_override,
    read_yaml,
)
from harness.errors import ConfigError
from harness.sweep.grid import INTERVAL_AXES, cell_key, check_rules, expand_grid, matches, normalized_grid, yaml_value

REPO_SWEEPS = Path(__file__).resolve().parents[2] / "sweeps"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class SearchParam(_Strict):
    type: Literal["float", "int", "categorical"] = Field(
        description="Optuna's suggest_float / suggest_int / suggest_categorical"
    )
    low: float | None = Field(None, description="float / int: lower bound (inclusive)")
    high: float | None = Field(None, description="float / int: upper bound (inclusive); must exceed `low`")
    log: bool = Field(False, description="sample on a log scale (needs `low` > 0; excludes `step`)")
    step: float | None = Field(None, description="float / int: discretisation step, at most high - low")
    choices: list[Any] | None = Field(None, description="categorical: the values, a non-empty list")

    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)

    @model_validator(mode="after")
    def _bounds(self) -> "SearchParam":
        # Optuna's own rules, checked at load (and so by --dry-run), not when sampling starts.
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs a non-empty `choices` list")
            return self
        if self.low is None or self.high is None or not self.low < self.high:
            raise ValueError(f"a {self.type} parameter needs `low` < `high`")
        if max(abs(self.low), abs(self.high)) > 1e30:
            raise ValueError("`low` and `high` must be finite numbers of at most 1e30 in size")
        if self.log and self.low <= 0:
            raise ValueError("a log-scale parameter needs `low` > 0")
        if self.log and self.step is not None:
            raise ValueError(
                "`log: true` and `step` cannot be combined (Optuna samples a log scale continuously); drop one of them"
            )
        if self.step is not None and not 0 < self.step <= self.high - self.low:
            raise ValueError(f"`step` must be > 0 and at most high - low = {self.high - self.low}")
        if self.type == "int":
            for name in ("low", "high", "step"):
                value = getattr(self, name)
                if value is not None and value != int(value):
                    raise ValueError(f"an int parameter needs an integer `{name}`, got {value}")
        return self


class PrunerSpec(_Strict):
    type: Literal["median", "none"] = Field(
        "median",
        description="`median`: stop a trial whose validation curve "
        "is below the median of the cell's finished trials at the same step",
    )
    startup_trials: int = Field(2, ge=0, description="finished trials of the cell before pruning starts")
    warmup_steps: int = Field(0, ge=0, description="optimizer steps before a trial can be pruned")


class SearchSpec(_Strict):
    trials_per_cell: int = Field(1, ge=1, le=100_000, description="search trials per cell, each a full training run")
    sampler: Literal["tpe", "random"] = Field("tpe", description="Optuna sampler, fitted on the cell's own trials only")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="sampler seed (+ trial number): numpy's 32-bit range")
    params: dict[str, SearchParam] = Field(
        default_factory=dict, description="run-config key path (not a grid axis) -> its range (`search.params.KEY.*`)"
    )
    pruner: PrunerSpec = Field(
        default_factory=PrunerSpec, description="`none`, `median`, or a mapping (`search.pruner.*`)"
    )

    @field_validator("pruner", mode="before")
    @classmethod
    def _pruner_shorthand(cls, value: Any) -> Any:
        return {"type": value} if isinstance(value, str) else value


class ObjectiveSpec(_Strict):
    metric: str = Field(
        "val/len_norm_reward",
        description="`val/*`: read from the trial's `checkpoints.json` at "
        "the checkpoint `rule` picks; anything else (`eval/...`): from the trial's MLflow run",
    )
    direction: Literal["maximize", "minimize"] = Field("maximize", description="what the study optimises")
    rule: str = Field(
        "len_norm",
        description="checkpoint selection rule (harness.selection): `len_norm`, "
        "`max_val_reward`, `final`, `len_norm_shifted`",
    )


class OverrideRule(_Strict):
    when: dict[str, Any] = Field(
        default_factory=dict,
        description="grid axis -> value or list of values; the rule "
        "applies to cells matching all of them (empty: every cell)",
    )
    set_: dict[str, Any] = Field(alias="set", description="run-config keys (dotted or nested) to set; not grid axes")


class EvalSpec(_Strict):
    suites: list[str] | None = Field(None, description="shorthand for `set: {eval.suites: ...}`")
    samples: int | None = Field(None, ge=1, description="shorthand for `set: {eval.samples: ...}`")


class TrackingSpec(_Strict):
    experiment: str | None = Field(
        None, description="MLflow experiment of the sweep run and its trials; none = the sweep's `name`"
    )


class LocalSpec(_Strict):  # --launcher local: GPUs per trial (harness/sweep/gpus.py)
    train_gpus: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="training GPUs (FSDP ranks) per trial; none = `--gpus-per-trial` - `generator_gpus`",
    )
    generator_gpus: int = Field(0, ge=0, le=1024, description="GPUs after the training ones, for the generator worker")


class SweepSpec(_Strict):
    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="names the study, the MLflow experiment (default) and `outputs/<name>`",
    )
    description: str = Field("", description="free text, for people")
    base: str = Field(
        description="the run config every cell starts from, relative to the sweep file's folder or "
        "to `sweeps/` (e.g. `runs/tiny.yaml`)"
    )
    output_dir: str | None = Field(
        None,
        description="none = `outputs/<name>`; trials go to "
        "`<output_dir>/trials/<cell>/<slot>/`; `--out-dir` overrides it",
    )
    study: str | None = Field(None, description="Optuna study name; none = `name`")
    grid: dict[str, Any] = Field(
        default_factory=dict,
        description="axes: run-config key path (top-level or dotted) "
        "-> non-empty list of values; cells are their product",
    )
    exclude: list[dict[str, Any]] = Field(
        default_factory=list,
        description="rules, each axis -> value or list; drops every cell matching all of a rule's keys",
    )
    overrides: list[OverrideRule] = Field(
        default_factory=list,
        description="conditional `when` / `set` rules, applied in order after `set` and the axes (later wins)",
    )
    set_: dict[str, Any] = Field(
        default_factory=dict, alias="set", description="run-config keys (dotted or nested) set for every cell"
    )
    search: SearchSpec | None = Field(
        None, description="Optuna search within each cell (`search.*`); none = one trial per cell"
    )
    objective: ObjectiveSpec = Field(default_factory=ObjectiveSpec, description="what the study optimises")
    eval: EvalSpec | None = Field(None, description="shorthand for `set: {eval.suites, eval.samples}`")
    seed_baseline: bool = Field(True, description="evaluate the starting policy once, as the tables' seed row")
    tracking: TrackingSpec = Field(default_factory=TrackingSpec, description="MLflow names")
    submitit: dict[str, Any] = Field(
        default_factory=dict,
        description="`--launcher submitit`: passed to "
        "`executor.update_parameters(...)` (`slurm_partition`, `gpus_per_node`, "
        "`timeout_min`, ...), plus `train_gpus` / `generator_gpus`, the trial's split "
        "of the node",
    )
    local: LocalSpec | None = Field(
        None, description="`--launcher local`: GPUs per trial (`local.*`, docs/multi_gpu.md)"
    )


@dataclass(frozen=True)
class Cell:
    key: str
    axes: dict[str, Any]
    overrides: tuple[str, ...]  # `key.path=value`, in order, after the base config
    config: RunConfig
    sources: dict[str, str] = field(default_factory=dict, compare=False, repr=False)


@dataclass
class Sweep:
    spec: SweepSpec
    path: Path
    text: str
    base_path: Path
    output_dir: Path
    cells: list[Cell]

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def study_name(self) -> str:
        return self.spec.study or self.spec.name

    @property
    def experiment(self) -> str:
        return self.spec.tracking.experiment or self.spec.name

    @property
    def slots(self) -> int:
        return self.spec.search.trials_per_cell if self.spec.search else 1

    def cell(self, key: str) -> Cell:
        for cell in self.cells:
            if cell.key == key:
                return cell
        raise KeyError(key)


# -- loading ---------------------------------------------------------------------------------


def load_sweep(path: str | Path, output_dir: str | Path | None = None) -> Sweep:
    """Read, validate and expand a sweep file. Creates nothing."""
    path = Path(path)
    raw = read_yaml(path)
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(describe_sweep_error(str(path), exc)) from None
    grid = normalized_grid(spec, str(path))
    check_rules(spec, grid, str(path))
    base_path = resolve_base(spec.base, path)
    base = read_yaml(base_path)
    cells = [build_cell(spec, base, base_path, axes, str(path)) for axes in expand_grid(spec, grid)]
    if not cells:
        raise ConfigError(f"{path}: the `exclude` rules remove every cell of the grid; nothing to run.")
    check_search(spec, cells, str(path))
    out = Path(output_dir or spec.output_dir or Path("outputs") / spec.name).resolve()
    return Sweep(spec, path, path.read_text(encoding="utf-8"), base_path, out, cells)


def describe_sweep_error(source: str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = key_location(err["loc"])
        value = err.get("input")
        if err["type"] == "extra_forbidden":
            lines.append(
                f"{source}: unknown key `{where}` (value {value!r}); a sweep file has keys "
                f"{', '.join(f.alias or n for n, f in SweepSpec.model_fields.items())}."
            )
        elif err["type"] == "missing":
            lines.append(f"{source}: required key `{where}` is missing.")
        else:
            shown = "{...}" if isinstance(value, dict) else value
            lines.append(f"{source}: `{where}` = {shown!r} is invalid: {err['msg'].removeprefix('Value error, ')}.")
    return " ".join(lines)


def key_location(loc: tuple) -> str:
    """('overrides', 2, 'set') -> 'overrides[2].set'."""
    text = ""
    for part in loc:
        if str(part).startswith("function-"):
            continue
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def resolve_base(base: str, sweep_path: Path) -> Path:
    """`base` is a run config named relative to the sweep file's folder or to sweeps/."""
    candidates = [sweep_path.parent / base, Path("sweeps") / base, REPO_SWEEPS / base, Path(base)]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    tried = ", ".join(str(c) for c in dict.fromkeys(candidates))
    raise ConfigError(
        f"{sweep_path}: `base` = {base!r} names no run config file (tried {tried}); "
        f"expected a path under sweeps/, e.g. `runs/tiny.yaml`."
    )


# -- one cell --------------------------------------------------------------------------------


def override_text(key: str, value: Any, where: str, source: str) -> str:
    if key in INTERVAL_AXES and value != "auto":
        try:
            return f"{key}={format_interval(parse_interval(value))}"
        except ValueError:
            pass  # validation of the cell reports it, naming `where`
    text = yaml_value(value)
    _, back = parse_override(f"{key}={text}")
    if back != value:
        raise ConfigError(
            f"{source}: `{where}` = {value!r} cannot be passed on a command line unchanged "
            f"(it reads back as {back!r}); write it as a plain YAML scalar or list."
        )
    return f"{key}={text}"


def cell_assignments(spec: SweepSpec, axes: dict[str, Any]) -> list[tuple[str, Any, str]]:
    """(key path, value, where in the sweep file), in the order they apply."""
    out = [(k, v, f"set.{k}") for k, v in flatten(spec.set_).items()]
    if spec.eval is not None:
        out += [(f"eval.{k}", v, f"eval.{k}") for k, v in spec.eval.model_dump().items() if v is not None]
    out += [(axis, value, f"grid.{axis}") for axis, value in axes.items()]
    for index, rule in enumerate(spec.overrides):
        if matches(rule.when, axes):
            out += [(k, v, f"overrides[{index}].set.{k}") for k, v in flatten(rule.set_).items()]
    return out


def build_cell(spec: SweepSpec, base: dict[str, Any], base_path: Path, axes: dict[str, Any], source: str) -> Cell:
    key = cell_key(axes)
    data = yaml.safe_load(yaml.safe_dump(base))  # a deep copy in plain types
    sources: dict[str, str] = {}
    overrides = []
    for path, value, where in cell_assignments(spec, axes):
        text = override_text(path, value, where, source)
        overrides.append(text)
        apply_override(data, *parse_override(text))
        sources[path] = where
    config = validate_cell(data, key, sources, source, base_path)
    check_suites(config, key, sources, source)
    return Cell(key, axes, tuple(overrides), config, sources)


def validate_cell(data: dict[str, Any], key: str, sources: dict[str, str], source: str, base_path: Path) -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            path = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
            where = origin(path, sources) or f"the base config {base_path} (key `{path}`)"
            message = err["msg"].removeprefix("Value error, ")
            if not path:
                lines.append(
                    f"{source}: cell {key} is invalid: {message} (drop the cell with an `exclude` "
                    f"rule, or change it with an `overrides` entry)."
                )
            elif err["type"] == "extra_forbidden":
                lines.append(
                    f"{source}: `{where}`: `{path}` is not a run-config key; check the spelling "
                    f"(sections: {', '.join(k for k in RunConfig.model_fields if k not in AXIS_KEYS)})."
                )
            else:
                value = err.get("input")
                lines.append(f"{source}: `{where}` = {value!r} is invalid for cell {key}: {message}.")
        raise ConfigError(" ".join(lines)) from None


def origin(path: str, sources: dict[str, str]) -> str | None:
    """Where in the sweep file the value at `path` (or a key above it) was set."""
    parts = path.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in sources:
            return sources[prefix] + path[len(prefix) :]
    return None


def check_suites(config: RunConfig, key: str, sources: dict[str, str], source: str) -> None:
    if not config.eval.suites:
        return
    from evaluators.registry import list_suites

    known = list_suites()
    for suite in config.eval.suites:
        if suite not in known:
            where = origin("eval.suites", sources) or "the base config's eval.suites"
            raise ConfigError(
                f"{source}: `{where}` names the unknown evaluation suite {suite!r} (cell {key}); "
                f"known suites: {', '.join(known)}."
            )


# -- search ----------------------------------------------------------------------------------


def check_search(spec: SweepSpec, cells: list[Cell], source: str) -> None:
    """Every search bound and choice must give a valid config in every cell."""
    if spec.search is None:
        return
    for name, param in spec.search.params.items():
        where = f"search.params.{name}"
        if name in AXIS_KEYS or name in cells[0].axes:
            raise ConfigError(f"{source}: `{where}` searches the grid axis `{name}`; search other keys.")
        values = param.choices if param.type == "categorical" else [param.low, param.high]
        if param.type == "int":
            values = [int(v) for v in values]
        for value in values:
            for cell in cells:
                data = cell.config.to_dict()
                apply_override(data, *parse_override(override_text(name, value, where, source)))
                validate_cell(data, cell.key, {name: where}, source, Path("(base)"))


def search_overrides(params: dict[str, Any]) -> list[str]:
    return [override_text(name, value, f"search.params.{name}", "search") for name, value in params.items()]

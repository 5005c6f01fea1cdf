"""Checks that run before any work starts: before the first MLflow call and before any folder exists.

    check_run_inputs(cfg, source, tracking_uri=None)   # harness train, and every sweep trial
    check_sweep_inputs(sweep, this_machine)           # harness sweep, before storage or folders

Everything a run config names that can be checked without training is checked here: the output
folder (a folder, writable), the device (`cuda` on a machine torch sees no GPU on), the seed
policy and reward model folders (`model.policy`, `model.reward_model`: a folder with config.json,
or a hub id already in the local cache), the reward names (`rewards.verifiable`,
`rewards.non_verifiable`), the data (`data.data_dir` and every record of the train and
validation splits), the evaluation suites and rule, and the tracking store (harness.tracking_uri). Each failure is one
paragraph naming the config file, the key, the value and what was expected.
"""

from __future__ import annotations

from pathlib import Path

from harness.config import RunConfig
from harness.errors import AssetMissingError, ConfigError, DataError, HarnessError
from harness.files import output_dir_of, writable
from harness.tasks import task_types
from harness.tracking_uri import check_tracking_uri


def check_run_inputs(cfg: RunConfig, source: str, tracking_uri: str | None = None) -> None:
    """Every check a run config allows before work starts (see module docstring)."""
    check_output_dir(cfg, source)
    check_device(cfg.model.device, source, "model.device")
    check_model_path(cfg.model.policy, source, "model.policy")
    if "non_verifiable" in task_types(cfg.task_mix):
        check_model_path(cfg.model.reward_model, source, "model.reward_model")
    check_reward_names(cfg, source)
    check_data(cfg, source)
    check_eval(cfg, source)
    if tracking_uri is not None:
        check_tracking_uri(tracking_uri, "the tracking URI (MLFLOW_TRACKING_URI or ./mlflow.db)")


def check_output_dir(cfg: RunConfig, source: str) -> None:
    path = output_dir_of(cfg)
    key = "output_dir" if cfg.output_dir else "output_dir (default runs/<run name>)"
    if path.exists() and not path.is_dir():
        raise ConfigError(
            f"{source}: `{key}` = {str(path)!r} is a file, not a folder; expected a folder "
            f"for the run's checkpoints (or a path that does not exist yet)."
        )
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(
            f"{source}: `{key}` = {str(path)!r} lies under {existing}, which is a file; expected a folder path."
        )
    if not writable(existing):
        raise ConfigError(
            f"{source}: `{key}` = {str(path)!r} is not writable ({existing} does not let this "
            f"user create files); choose a folder you can write to."
        )


def check_device(device: str, source: str, key: str) -> None:
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(
                f"{source}: `{key}` = {device!r} but torch sees no CUDA GPU on this machine; "
                f"use `{key}=cpu` (or `auto`, which picks the GPU when there is one)."
            )


def check_model_path(value: str, source: str, key: str) -> None:
    """'tiny', a local folder holding config.json, or a hub id already in the local cache."""
    if value == "tiny":
        return
    local = Path(value).expanduser()
    if local.exists() or local.is_absolute() or value.startswith((".", "~")):
        if not local.is_dir():
            state = "is a file" if local.exists() else "does not exist"
            raise AssetMissingError(
                f"{source}: `{key}` = {value!r} {state}; expected a model folder written by "
                f"save_pretrained (config.json, model.safetensors, tokenizer files), or 'tiny'."
            )
        if not (local / "config.json").is_file():
            raise AssetMissingError(
                f"{source}: `{key}` = {value!r} is a folder without config.json, so it is not "
                f"a saved model; expected a folder written by save_pretrained, or 'tiny'."
            )
        return
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(value, "config.json")
    except Exception:  # noqa: BLE001 - an id the hub library rejects is simply not cached
        cached = None
    if not isinstance(cached, str):
        raise AssetMissingError(
            f"{source}: `{key}` = {value!r} is neither a local model folder nor a hub model "
            f"in the local cache, and nothing is downloaded at run time; download it first "
            f"(huggingface-cli download {value}) or point `{key}` at a local folder."
        )


def check_reward_names(cfg: RunConfig, source: str) -> None:
    from harness.rewards.registry import REWARD_FACTORIES

    wanted = []
    if "verifiable" in task_types(cfg.task_mix):
        wanted.append(("rewards.verifiable", cfg.rewards.verifiable))
    if "non_verifiable" in task_types(cfg.task_mix):
        wanted.append(("rewards.non_verifiable", cfg.rewards.non_verifiable))
    for key, name in wanted:
        if name not in REWARD_FACTORIES:
            raise ConfigError(
                f"{source}: `{key}` = {name!r} is not a known reward function; expected one of "
                f"{', '.join(sorted(REWARD_FACTORIES))}."
            )


def check_data(cfg: RunConfig, source: str) -> None:
    """Every prompt record of the train and validation splits loads (real data sets: data.data_dir)."""
    from harness.tasks import task_pools

    sources = []
    if "verifiable" in task_types(cfg.task_mix):
        sources.append(("data.verifiable", cfg.data.verifiable))
    if "non_verifiable" in task_types(cfg.task_mix):
        sources.append(("data.non_verifiable", cfg.data.non_verifiable))
    real = [(key, name) for key, name in sources if not name.startswith("tiny_")]
    if real:
        key, name = real[0]
        if not cfg.data.data_dir:
            raise AssetMissingError(
                f"{source}: `{key}` = {name!r} reads local files, but `data.data_dir` is not set; "
                f"set data.data_dir to the folder holding {name}/train.jsonl and "
                f"{name}/validation.jsonl (nothing is downloaded at run time)."
            )
        folder = Path(cfg.data.data_dir).expanduser()
        if not folder.is_dir():
            state = "is a file" if folder.exists() else "does not exist"
            raise AssetMissingError(
                f"{source}: `data.data_dir` = {cfg.data.data_dir!r} {state}; expected the folder "
                f"holding {name}/train.jsonl and {name}/validation.jsonl."
            )
    try:
        for split in ("train", "validation"):
            task_pools(cfg.task_mix, cfg.data, split)
    except HarnessError as exc:
        names = ", ".join(f"{key} = {name!r}" for key, name in sources)
        raise type(exc)(f"{source} ({names}, data.data_dir = {cfg.data.data_dir!r}): {exc}") from None


def check_eval(cfg: RunConfig, source: str, files: bool = True) -> None:
    if not cfg.eval.suites:
        return
    from evaluators.registry import get_suite
    from harness.selection import get_rule

    for name in cfg.eval.suites:
        try:
            get_suite(name)
        except ConfigError as exc:
            raise ConfigError(f"{source}: `eval.suites`: {exc}") from None
    try:
        get_rule(cfg.eval.rule)
    except ConfigError as exc:
        raise ConfigError(f"{source}: `eval.rule`: {exc}") from None
    for suite, path in cfg.eval.data.items():
        if suite not in cfg.eval.suites:
            raise ConfigError(
                f"{source}: `eval.data.{suite}` names a suite that is not in eval.suites "
                f"({', '.join(cfg.eval.suites)})."
            )
        if files and not Path(path).is_file():
            state = "is a directory" if Path(path).is_dir() else "does not exist"
            raise DataError(f"{source}: `eval.data.{suite}` = {path!r} {state}; expected the suite's data file.")


def check_sweep_inputs(sweep, this_machine: bool = True) -> None:
    """What every cell's run will need (reward names, suites; with `this_machine`, when the trials run
    here, also model folders, devices and data), checked once per distinct setting before a storage,
    a folder or an MLflow run exists (harness.preflight). A --dry-run skips this: it plans a grid
    that may run elsewhere (a GPU cluster)."""
    seen: set[str] = set()
    for cell in sweep.cells:
        cfg = cell.config
        source = f"{sweep.path} (cell {cell.key}, base {sweep.base_path})"
        fingerprint = repr(
            (
                cfg.task_mix,
                cfg.model,
                cfg.data,
                cfg.rewards.verifiable,
                cfg.rewards.non_verifiable,
                cfg.eval.suites,
                cfg.eval.rule,
                cfg.eval.data,
            )
        )
        if fingerprint in seen:
            continue
        seen.add(fingerprint)
        check_reward_names(cfg, source)
        check_eval(cfg, source, files=this_machine)
        if this_machine:
            check_device(cfg.model.device, source, "model.device")
            check_model_path(cfg.model.policy, source, "model.policy")
            if "non_verifiable" in task_types(cfg.task_mix):
                check_model_path(cfg.model.reward_model, source, "model.reward_model")
            check_data(cfg, source)
    out = sweep.output_dir
    while not out.exists():
        out = out.parent
    if not out.is_dir():
        raise ConfigError(
            f"{sweep.path}: `output_dir` = {str(sweep.output_dir)!r} lies under the file {out}; expected a folder path."
        )
    from harness.tracking import default_tracking_uri

    check_tracking_uri(default_tracking_uri(), "the tracking URI (MLFLOW_TRACKING_URI or ./mlflow.db)")

"""One pattern for everything chosen by name (lm-eval style): a lazy name -> "module:attr" map.

    REWARDS = Registry("reward function", {"math_verify": "harness.rewards.registry:math_verify_fn"})
    fn = REWARDS.build("math_verify", {"workers": 2}, where="rewards.verifiable")
    factory = REWARDS.get("math_verify")          # the object itself, imported on first use
    "math_verify" in REWARDS; list(REWARDS)       # names, without importing anything

Rewards, evaluation suites, judges, checkpoint-selection rules, generator backends and sweep
launchers each keep one `Registry`. An entry is a "module:attr" string (attr may be dotted,
e.g. "harness.sweep.launch:LocalLauncher.create"), imported only when the name is asked for,
so importing a package never imports an optional backend; `register` also accepts the object
itself (suites built at import, user extensions). Unknown names fail with a `ConfigError`
listing the known ones; `build` checks the options against the factory's signature first
(unknown and missing options are named, before anything is built).
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Iterator

from harness.errors import ConfigError


class Registry:
    """Name -> lazily imported object, for one kind of thing (`what`, e.g. "judge")."""

    def __init__(self, what: str, entries: dict[str, Any] | None = None, *, keep_order: bool = False) -> None:
        self.what = what
        self._entries: dict[str, Any] = dict(entries or {})
        self.keep_order = keep_order  # list names in registration order (else sorted)

    # -- names -------------------------------------------------------------------------------
    def names(self) -> list[str]:
        return list(self._entries) if self.keep_order else sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def register(self, name: str, target: Any) -> Any:
        """Add (or replace) `name`: a "module:attr" string, or the object itself. Returns target."""
        self._entries[name] = target
        return target

    # -- lookup ------------------------------------------------------------------------------
    def unknown_name_error(self, name: Any, where: str | None = None) -> ConfigError:
        return ConfigError(
            f"{where or self.what + ' name'} is {name!r}, which is not a known {self.what}. "
            f"Known {self.what}s: {', '.join(self.names()) or '(none)'}."
        )

    def get(self, name: str, where: str | None = None) -> Any:
        """The object registered as `name` (imported now if it is still a "module:attr" string)."""
        if name not in self._entries:
            raise self.unknown_name_error(name, where)
        target = self._entries[name]
        if isinstance(target, str):
            target = self._entries[name] = load_target(target)
        return target

    # -- options -----------------------------------------------------------------------------
    def option_problems(self, name: str, options: dict[str, Any]) -> tuple[list[str], list[str], list[str], list[str]]:
        """(unknown, missing, accepted, required) option names for `name`'s factory, from its signature."""
        parameters = signature_parameters(self.get(name))
        variadic = (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
        named = [k for k, p in parameters.items() if p.kind not in variadic]
        required = [k for k in named if parameters[k].default is inspect.Parameter.empty]
        takes_any = any(p.kind == inspect.Parameter.VAR_KEYWORD for p in parameters.values())
        unknown = [] if takes_any else sorted(set(options) - set(named))
        missing = sorted(k for k in required if k not in options)
        return unknown, missing, named, required

    def check(self, name: str, options: dict[str, Any] | None = None, where: str | None = None) -> None:
        """A ConfigError naming unknown and missing options, before anything is built."""
        self.get(name, where)
        unknown, missing, accepted, required = self.option_problems(name, dict(options or {}))
        if unknown or missing:
            raise ConfigError(
                f"{where or self.what} {name!r}: unknown options {unknown} and missing options {missing}; "
                f"expected options {accepted} (required: {required})."
            )

    def build(self, name: str, options: dict[str, Any] | None = None, where: str | None = None) -> Any:
        """`get(name)(**options)` after `check`."""
        options = dict(options or {})
        self.check(name, options, where)
        return self.get(name, where)(**options)


def load_target(target: str) -> Any:
    """Import "package.module:attr.sub" and return the attribute."""
    module_name, sep, attr_path = target.partition(":")
    if not sep or not module_name or not attr_path:
        raise ValueError(f"registry target {target!r}: expected 'module:attr'")
    value: Any = importlib.import_module(module_name)
    for attr in attr_path.split("."):
        value = getattr(value, attr)
    return value


def signature_parameters(factory: Any) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(factory).parameters)

"""The options of every entry point: constrained number types, the runtime options, groups, and the one typed check.

Every entry point is a typed ``main(...)`` with a docstring per argument. A simple bound is written in the type, not
in the body (``num_beams: PositiveInt = 1``), so the same check refuses it from a flag, a YAML config, a pipeline
section and a direct call from Python; only rules between options stay hand-written in the body::

    @checked
    def main(images: Path, batch_size: PositiveInt = 16, threads: PositiveInt | None = None) -> None: ...

Constrained types (jsonargparse's, see :mod:`jsonargparse.typing`): :data:`PositiveInt` (>= 1),
:data:`NonNegativeInt` (>= 0), :data:`PositiveFloat` (> 0), :data:`NonNegativeFloat` (>= 0),
:data:`ClosedUnitInterval` ([0, 1]), :data:`OpenUnitInterval` ((0, 1)); and the project's own, made with
``restricted_number_type`` here (one name per bound: jsonargparse refuses a second name for the same bound):
:data:`UnitFraction` ([0, 1): a share held out), :data:`UnitShare` ((0, 1]), :data:`Percent` ([0, 100]),
:data:`Factor` (>= 1), :data:`ImageSide` (>= 64 pixels), :data:`ResolutionRatio` ((0, 64]), :data:`TileSide` (>= 8
pixels), :data:`TileOverlap` ([0, 0.9]), :data:`Port` (1..65535). A value outside one is a problem like ``num_beams 0
is invalid; expected an integer >= 1 (default: 1)``.

The runtime options: options about where and how a command runs, with one name and one meaning wherever they appear
(a command has those it needs):

- ``device: Literal["auto", "cpu", "cuda"]``: auto is CUDA when available.
- ``threads: PositiveInt | None = None``: torch CPU threads; empty (null): torch's default. None rather than 0 for
  the default, so that a number always means that number of threads.
- ``workers: NonNegativeInt``: worker processes that read and decode data beside the main one (a DataLoader's
  ``num_workers``); 0: everything in the main process.
- ``progress: bool = True``: show progress (a bar on a terminal, one line per step in a log).
- ``overwrite: bool = False``: replace outputs an earlier run wrote (without it they are kept or refused).
- ``seed: int = 0``: seed of every random choice of the command; the same seed gives the same outputs.

Option groups: where options belong together they are one dataclass deriving from :class:`Group`, their one
definition (name, type with bounds, default, and the help in its ``Attributes:``), and ``main`` takes the group as
one parameter (``def main(data: DataConfig = DataConfig(), ...)``). jsonargparse reads the fields as class
arguments; :func:`options_of` lists every option of an entry point flat (a group's fields in its place), so flags
(``--crop-size``), YAML keys (``crop_size:``, or ``data: {crop_size: ...}``) and keywords of a direct call
(``main(crop_size=64)``, gathered into the group by :func:`checked` or :func:`gathers`) stay flat. A field's
``default_factory`` is called once, for the option's default.

The typed check (jsonargparse, whatever the source): :func:`check_options` checks a mapping of options (a YAML file,
a pipeline section, parsed flags) against a function's signature; :func:`config_kwargs` reads and checks a YAML file;
:func:`checked` checks a direct call's arguments. A wrong type, a value outside a ``Literal[...]`` or a bound, an
unknown key or ``null`` for a non-optional option is a :class:`segcap.errors.ConfigError` naming the source, the key
and what is expected, down to a value's part: ``sources[0].kind 'lovedaa' is not one of drone, loveda, openearthmap,
folder (did you mean loveda?)``, ``sources[0]: unknown key clas_map (did you mean class_map?)``, ``sources[0].gsd
-1 is invalid; expected a number > 0 or null``. These problems of every option given come in one error, before the
function's own rules between options run (those come together in the next).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import inspect
import operator
import types
import typing
from argparse import ArgumentError
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from jsonargparse import ArgumentParser, Namespace
from jsonargparse.typing import (
    ClosedUnitInterval,
    NonNegativeFloat,
    NonNegativeInt,
    OpenUnitInterval,
    PositiveFloat,
    PositiveInt,
    restricted_number_type,
)

from segcap.errors import ConfigError, one_line
from segcap.resources import config_path, configs_dir, looked_for

__all__ = ["COMMAND_LINE", "EMPTY", "AtLeastTwo", "ClosedUnitInterval", "Factor", "Group", "ImageSide",
           "NonNegativeFloat", "NonNegativeInt", "OpenUnitInterval", "Option", "Percent", "Port", "PositiveFloat",
           "PositiveInt", "ResolutionRatio", "TileOverlap", "TileSide", "UnitFraction", "UnitShare", "arg_docs",
           "check_options", "checked", "config_kwargs", "describe", "field_problems", "flag", "flat", "gathers",
           "grouped", "groups_of", "hints_of", "is_mapping_list", "is_sequence", "load_yaml", "name_sources",
           "non_none", "option_problems", "options_of", "params_of", "restricted_number_type", "show_default",
           "typed_options", "ungrouped", "yaml_value"]

# The project's other bounds. Defined here, once: jsonargparse registers one type per bound, and a second name for
# the same bound is refused (ValueError on import).
UnitFraction = restricted_number_type("UnitFraction", float, [(">=", 0), ("<", 1)], docstring="a share held out: [0, 1)")
UnitShare = restricted_number_type("UnitShare", float, [(">", 0), ("<=", 1)], docstring="a share of something: (0, 1]")
Percent = restricted_number_type("Percent", float, [(">=", 0), ("<=", 100)], docstring="a percentage: [0, 100]")
Factor = restricted_number_type("Factor", float, (">=", 1.0), docstring="a factor >= 1 (1: unchanged)")
ImageSide = restricted_number_type("ImageSide", int, (">=", 64), docstring="an image side in pixels, >= 64")
AtLeastTwo = restricted_number_type("AtLeastTwo", int, (">=", 2), docstring="an integer >= 2")
ResolutionRatio = restricted_number_type("ResolutionRatio", float, [(">", 0), ("<=", 64)],
                                         docstring="how many times finer one ground resolution is: (0, 64]")
TileSide = restricted_number_type("TileSide", int, (">=", 8), docstring="a tile side in pixels, >= 8")
TileOverlap = restricted_number_type("TileOverlap", float, [(">=", 0), ("<=", 0.9)],
                                     docstring="the share of a tile its neighbours overlap: [0, 0.9]")
Port = restricted_number_type("Port", int, [(">=", 1), ("<=", 65535)], docstring="a TCP port: 1..65535")

F = TypeVar("F", bound=Callable[..., Any])
COMMAND_LINE = "command line"  # the source named for values from flags
EMPTY = inspect.Parameter.empty  # an :class:`Option`'s default when it has none (a required option)


# ---------------------------------------------------------------- option groups
class Group:
    """Base of an options dataclass that an entry point takes whole: the single source of those options.

    A parameter typed with such a dataclass (``data: DataConfig = DataConfig()``) is a group of the command's
    options: each field is an option (its name, its type with bounds, its default, its line of the class docstring's
    ``Attributes:`` as help), read by jsonargparse as class arguments. The flags stay flat (``--crop-size``, not
    ``--data.crop-size``); a YAML config writes the fields flat (``crop_size: 64``) or under the group's name
    (``data: {crop_size: 64}``); ``--help`` lists each group under its class docstring's first line. A direct
    call gives the group object, or its fields as keywords (``main(crop_size=64)``), as :func:`checked` gathers
    them. Field names are unique among a command's options."""


@dataclasses.dataclass(frozen=True)
class Option:
    """One option of an entry point: a parameter of its ``main``, or a field of one of its :class:`Group` s
    (``group``: the parameter holding it)."""

    name: str
    type: Any
    default: Any  # EMPTY: required
    group: str | None = None


def _group_class(tp: Any) -> type | None:
    return tp if isinstance(tp, type) and issubclass(tp, Group) and dataclasses.is_dataclass(tp) else None


@functools.cache
def groups_of(fn: Callable[..., Any]) -> dict[str, type]:
    """``fn``'s :class:`Group` parameters: {parameter name: its dataclass}."""
    fn = inspect.unwrap(fn)
    hints = _hints(fn)
    return {n: c for n in params_of(fn) if (c := _group_class(hints.get(n))) is not None}


@functools.cache
def options_of(fn: Callable[..., Any]) -> dict[str, Option]:
    """Every option of ``fn``, flat, in order: its parameters, each :class:`Group` parameter replaced by the
    group's fields."""
    fn = inspect.unwrap(fn)
    hints, groups, out = _hints(fn), groups_of(fn), {}
    for name, param in params_of(fn).items():
        if name not in groups:
            out[name] = Option(name, hints.get(name, Any), param.default)
            continue
        cls = groups[name]
        field_hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            if f.name in out:
                raise TypeError(f"{fn.__module__}.{fn.__qualname__}: option {f.name} is in two places (group {name} "
                                f"and {out[f.name].group or 'a parameter'}); name each option once")
            default = (f.default if f.default is not dataclasses.MISSING else f.default_factory()
                       if f.default_factory is not dataclasses.MISSING else EMPTY)
            out[f.name] = Option(f.name, field_hints[f.name], default, name)
    return out


def grouped(fn: Callable[..., Any], values: dict[str, Any]) -> dict[str, Any]:
    """``fn``'s keyword arguments from flat option values (:func:`options_of`'s names): each group's fields become
    one object of its dataclass (fields not given take their defaults); other values pass through."""
    opts, groups = options_of(fn), groups_of(fn)
    kwargs = {k: v for k, v in values.items() if not (k in opts and opts[k].group)}
    for g, cls in groups.items():
        fields = {k: v for k, v in values.items() if k in opts and opts[k].group == g}
        if fields or g not in kwargs:
            base = kwargs.get(g)
            kwargs[g] = dataclasses.replace(base, **fields) if base is not None else cls(**fields)
    return kwargs


def ungrouped(fn: Callable[..., Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """Flat option values from ``fn``'s keyword arguments (``main``'s ``locals()``): each group object's fields in
    its place, in :func:`options_of`'s order (the inverse of :func:`grouped`)."""
    return {name: getattr(kwargs[o.group], name) if o.group else kwargs[name]
            for name, o in options_of(fn).items() if o.group or name in kwargs}


def flat(options: Any) -> dict[str, Any]:
    """A :class:`Group` object's fields as {name: value} (not recursively: a field holding a dataclass stays one)."""
    return {f.name: getattr(options, f.name) for f in dataclasses.fields(options) if f.init}


# ---------------------------------------------------------------- direct calls
def checked(fn: F) -> F:
    """Check a direct call's arguments as a flag or a config value would be checked, before ``fn`` runs.

    The arguments given whose type is constrained (a bound, a ``Literal``, a dataclass with such fields, or a list
    of them) are checked with :func:`check_options`, the source named ``module.function``; a problem is a
    :class:`ConfigError`. The values ``fn`` receives are the caller's; a :class:`Group`'s fields given as keywords
    become its object (:func:`gathers`), a group object given is checked by :func:`field_problems`. :func:`segcap.cli.run`
    calls the function underneath (``__wrapped__``), its values checked already."""
    call = _gathering(fn, check=True)
    call.__checked__ = True  # type: ignore[attr-defined]
    return typing.cast(F, call)


def gathers(fn: F) -> F:
    """Let a direct call give a :class:`Group`'s fields as keywords (``main(run_dir=...)``): they become the group's
    object (:func:`grouped`); nothing is checked here (for an entry point that checks all its options itself, every
    problem at once)."""
    return typing.cast(F, _gathering(fn, check=False))


def _gathering(fn: Callable[..., Any], check: bool) -> Callable[..., Any]:
    signature = inspect.signature(fn)
    source = f"{fn.__module__}.{fn.__qualname__}".removesuffix(".main")

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        opts, groups = options_of(fn), groups_of(fn)
        fields = {k: kwargs.pop(k) for k in list(kwargs) if k in opts and opts[k].group}
        bound = signature.bind(*args, **kwargs).arguments
        both = sorted({opts[k].group for k in fields} & set(bound))
        if both:
            raise TypeError(f"{source}: give {both[0]}= or its fields as keywords, not both")
        values = {**bound, **fields}
        if check:
            given = {k: values[k] for k in opts if k in values and k not in groups and _constrained(opts[k].type)}
            problems = option_problems(fn, given, source) if given else []
            problems += [p for g in groups if g in bound for p in field_problems(bound[g], source)]
            if problems:
                raise ConfigError(problems)
        return fn(**grouped(fn, values)) if groups else fn(*args, **kwargs)

    return call


def field_problems(obj: Any, source: str | None = None) -> list[str]:
    """The typed check of a dataclass of options (``obj``): its constrained fields that differ from their defaults,
    checked as :func:`checked` checks a call; the source named is ``source`` or the class's name."""
    cls, hints = type(obj), typing.get_type_hints(type(obj))
    given = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)
             if _constrained(hints.get(f.name)) and getattr(obj, f.name) != f.default}
    return option_problems(cls, given, source or cls.__name__) if given else []


@functools.cache
def _constrained(tp: Any) -> bool:
    if _restrictions(tp) or typing.get_origin(tp) is typing.Literal:
        return True
    if dataclasses.is_dataclass(tp):
        return any(_constrained(h) for h in typing.get_type_hints(tp).values())
    return any(_constrained(a) for a in typing.get_args(tp) if a is not Ellipsis)


# ---------------------------------------------------------------- the typed check
def check_options(fn: Callable[..., Any], options: dict[str, Any], source: str) -> dict[str, Any]:
    """Check a mapping of options for ``fn`` (keys are its option names, dashes allowed, or a group's name holding a mapping of its options) and return them typed.

    Unknown keys, wrong types, values outside a ``Literal`` or a bound and ``null`` for a non-optional option are
    refused with one :class:`ConfigError` that names ``source`` (e.g. ``"configs/pipeline/synthetic.yaml, section
    llm"``), each key and what it expects. Only the given keys are returned (defaults are not filled in); ``null``
    stays ``None`` for an optional option, clearing it. Path-typed values become :class:`~pathlib.Path`, bounded
    numbers plain ``int`` and ``float``.
    """
    values, problems = typed_options(fn, options, source)
    if problems:
        raise ConfigError(problems)
    return values


def option_problems(fn: Callable[..., Any], options: dict[str, Any], source: str) -> list[str]:
    """:func:`check_options`' problems as a list (empty when the options are fine), to report with others."""
    return typed_options(fn, options, source)[1]


def name_sources(error: ConfigError, origins: dict[str, str]) -> ConfigError:
    """``error`` with each problem about an option that came from a config file prefixed by that file's path: an entry
    point checks values (``hidden_size must be a positive integer``) without knowing where they came from."""
    def source(problem: str) -> str | None:
        for name, origin in origins.items():
            if origin != COMMAND_LINE and not problem.startswith(origin):
                for form in (name, flag(name)):
                    after = problem[len(form):len(form) + 1]
                    if problem.startswith(form) and not (after.isalnum() or after == "_"):
                        return origin
        return None

    problems = [f"{where}: {p}" if (where := source(p)) else p for p in error.problems]
    return error if problems == error.problems else ConfigError(problems)


def config_kwargs(fn: Callable[..., Any], path: str | Path) -> dict[str, Any]:
    """Read a YAML config for ``fn`` and check it with :func:`check_options` (the source named is the file)."""
    return check_options(fn, load_yaml(path), str(path))


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with a clear error for a missing or malformed file; a missing ``configs/...`` path is the
    shipped config of that name (:func:`segcap.resources.config_path`), so the packaged configs work from any folder."""
    given, path = path, config_path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {given}; {looked_for(given)}; pass a path to an existing YAML "
                          f"file, or a shipped one such as configs/segmentation.yaml (they are in {configs_dir()})")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({one_line(e)})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option: value at the top level")
    return data


def typed_options(fn: Callable[..., Any], options: dict[str, Any], source: str, flags: bool = False
                  ) -> tuple[dict[str, Any], list[str]]:
    """Convert and check ``options`` against ``fn``'s signature; return (typed values, problems). ``flags``: the
    values are command-line strings, named as flags (``--batch-size``) in the problems."""
    fn = inspect.unwrap(fn)  # a checked function and the one underneath: one parser
    params = options_of(fn)
    values: dict[str, Any] = {}
    problems: list[str] = []
    unknown = []
    for key, value in _nested_flat(fn, options).items():
        name = str(key).replace("-", "_")
        if name not in params:
            unknown.append(str(key))
            continue
        label = flag(name) if flags else name
        tp = params[name].type
        shown = " ".join(map(str, value)) if flags and isinstance(value, list) else repr(value)
        expected = f"expected {describe(tp)}"
        if params[name].default is not EMPTY:
            expected += f" (default: {show_default(params[name].default)})"
        if value is None and not _allows_none(tp):
            problems.append(f"{source}: {label} cannot be null; {expected}")
        elif isinstance(value, str) and value == "" and Path in _union_args(tp):
            fix = f"; to clear it write {'null' if not flags else label + ' null'}" if _allows_none(tp) else ""
            problems.append(f"{source}: {label} is an empty path{fix}")
        elif (typed := _parse_value(_typed_parser(fn), name, value)) is _INVALID:
            parts = _explain(value, tp, label) if _structured(tp) else []
            problems += [f"{source}: {p}" for p in parts] or [f"{source}: {label} {shown} is invalid; {expected}"]
        else:
            values[name] = _plain(typed)
    if unknown:
        names = [flag(n) if flags else n for n in params]
        what = [u + _did_you_mean(u.lstrip("-").replace("-", "_"), list(params), flags) for u in unknown]
        problems.append(f"{source}: unknown option(s) {', '.join(what)}; valid options: {', '.join(names)}")
    return values, problems


_INVALID = object()


def _nested_flat(fn: Callable[..., Any], options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with a group written as a mapping under its name (``data: {crop_size: 64}``) made flat."""
    groups = groups_of(fn)
    if not any(str(k).replace("-", "_") in groups and isinstance(v, dict) for k, v in options.items()):
        return options
    out: dict[str, Any] = {}
    for key, value in options.items():
        if str(key).replace("-", "_") in groups and isinstance(value, dict):
            out.update(value)
        else:
            out[key] = value
    return out


def _parse_value(parser: ArgumentParser, name: str, value: Any) -> Any:
    """jsonargparse's typed ``value`` for the option ``name`` of ``parser``, or :data:`_INVALID`."""
    try:
        return parser.parse_object({name: copy.deepcopy(value)}, defaults=False)[name]
    except (ArgumentError, TypeError, ValueError, KeyError):
        return _INVALID


@functools.cache
def _typed_parser(fn: Callable[..., Any]) -> ArgumentParser:
    """jsonargparse's parser for ``fn``'s signature: it converts and checks values, one key at a time."""
    parser = ArgumentParser(exit_on_error=False)
    groups = groups_of(fn)
    parser.add_function_arguments(fn, as_group=False, skip={"self", *groups})  # a method's self: no option
    for cls in groups.values():  # each group's fields, flat (no nested key): the class is their one source
        parser.add_class_arguments(cls, None, as_group=False)
    for action in parser._actions:  # one key is checked at a time: the command line reports missing options itself
        action.required = False
    return parser


@functools.cache
def _type_parser(tp: Any) -> ArgumentParser | None:
    """jsonargparse's parser for one value of type ``tp`` (key ``x``): does a part of a value fit its type? None
    for a type jsonargparse does not take (its values are not checked part by part)."""
    parser = ArgumentParser(exit_on_error=False)
    try:
        parser.add_argument("--x", type=tp)
    except (ValueError, TypeError):
        return None
    return parser


def _plain(value: Any) -> Any:
    """``value`` with jsonargparse's bounded numbers (a ``PositiveInt`` is an ``int`` subclass that YAML cannot
    write) as plain ``int`` and ``float``, inside lists and namespaces too."""
    if _restrictions(type(value)):
        return type(value)._type(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, Namespace):
        for key in list(value.keys()):
            value[key] = _plain(value[key])
    return value


def params_of(fn: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    """``fn``'s named parameters (not ``*args``/``**kwargs``)."""
    return {n: p for n, p in inspect.signature(fn).parameters.items()
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


@functools.cache
def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    return typing.get_type_hints(fn)


def hints_of(fn: Callable[..., Any]) -> dict[str, Any]:
    """The types of ``fn``'s options (:func:`options_of`), resolved."""
    return {n: o.type for n, o in options_of(fn).items()}


def arg_docs(fn: Callable[..., Any]) -> dict[str, str]:
    """Each option's line of ``fn``'s docstring (``Args:``) or of its group's (``Attributes:``), on one line, as
    jsonargparse read it."""
    return {a.dest: " ".join((a.help or "").split()) for a in _typed_parser(inspect.unwrap(fn))._actions}


def flag(name: str) -> str:
    """The command-line flag of an option: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


# ---------------------------------------------------------------- what a type expects, in words
def _union_args(tp: Any) -> tuple[Any, ...]:
    return typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)


def _allows_none(tp: Any) -> bool:
    return tp is Any or type(None) in _union_args(tp)


def non_none(tp: Any) -> Any:
    """``X`` for ``X | None``; ``tp`` itself otherwise."""
    args = [a for a in _union_args(tp) if a is not type(None)]
    return args[0] if len(args) == 1 else tp


def is_sequence(tp: Any) -> bool:
    """Whether ``tp`` (or ``tp | None``) is a list or tuple type."""
    tp = non_none(tp)
    return tp in (list, tuple) or typing.get_origin(tp) in (list, tuple, Sequence, typing.Sequence)


def is_mapping_list(tp: Any) -> bool:
    """Whether ``tp`` is a list whose items are mappings or dataclasses (written ``{key: value}``)."""
    items = [a for a in typing.get_args(non_none(tp)) if a is not Ellipsis]
    return (is_sequence(tp) and len(items) == 1
            and (dataclasses.is_dataclass(items[0]) or items[0] is dict or typing.get_origin(items[0]) is dict))


def _structured(tp: Any) -> bool:
    """Whether values of ``tp`` have parts to name when one is wrong: lists, mappings, dataclasses."""
    tp = non_none(tp)
    return is_sequence(tp) or tp is dict or typing.get_origin(tp) is dict or dataclasses.is_dataclass(tp)


def _restrictions(tp: Any) -> list[tuple[Callable, Any]]:
    """A jsonargparse bounded number type's ``[(operator, reference), ...]``; empty for any other type."""
    return (getattr(tp, "_restrictions", None) or []) if isinstance(tp, type) else []


_SYMBOLS = {operator.gt: ">", operator.ge: ">=", operator.lt: "<", operator.le: "<=", operator.eq: "==",
            operator.ne: "!="}


def _bounds(tp: Any) -> str:
    """A bounded number type in words: ``an integer >= 1``, ``a number > 0``, ``a number in [0, 1)``."""
    base, parts = tp._type, []
    for op, ref in _restrictions(tp):
        symbol = _SYMBOLS[op]
        if base is int and symbol in (">", "<"):  # an integer > 0 is an integer >= 1
            symbol, ref = symbol + "=", ref + (1 if symbol == ">" else -1)
        parts.append((symbol, ref))
    if base is float and tp._join == "and" and [s[0] for s, _ in parts] == [">", "<"]:
        (low, lo), (high, hi) = parts
        return f"a number in {'[' if low == '>=' else '('}{lo:g}, {hi:g}{']' if high == '<=' else ')'}"
    noun = "an integer" if base is int else "a number"
    return noun + " " + f" {tp._join} ".join(f"{s} {r:g}" for s, r in parts)


def describe(tp: Any) -> str:
    """What a value of type ``tp`` looks like, for messages and ``--help``."""
    args = _union_args(tp)
    if len(args) > 1:
        parts = [describe(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or null" if type(None) in args else "")
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return "one of " + ", ".join(str(v) for v in typing.get_args(tp))
    if tp in (list, tuple) or origin in (list, tuple, Sequence, typing.Sequence):
        inner = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return "a list" + (f" (each {describe(inner[0])})" if len(inner) == 1 else "")
    if tp is dict or origin is dict:
        return "a mapping such as {key: value}"
    if dataclasses.is_dataclass(tp):  # its keys and what each takes, from its fields (a list of sources: each kind)
        hints = typing.get_type_hints(tp)
        return "{" + "; ".join(f"{f.name}: {describe(hints[f.name])}" for f in dataclasses.fields(tp)) + "}"
    if _restrictions(tp):
        return _bounds(tp)
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", Path: "a path"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def show_default(value: Any) -> str:
    """A default as the user writes it: ``null``, ``[a, b]``."""
    if value is None:
        return "null"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def _did_you_mean(value: Any, choices: Sequence[Any], flags: bool = False) -> str:
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    return f" (did you mean {flag(close[0]) if flags else close[0]}?)" if close else ""


# ---------------------------------------------------------------- which part of a value is wrong
def _explain(value: Any, tp: Any, where: str) -> list[str]:
    """Which parts of ``value`` do not fit ``tp``, each named by its place (``sources[0].kind``) with what is allowed
    there; empty when no part can be blamed (the caller then says the whole value is invalid)."""
    if hasattr(value, "as_dict"):  # jsonargparse's Namespace
        value = value.as_dict()
    if value is None:
        return [] if _allows_none(tp) else [f"{where} cannot be null; expected {describe(tp)}"]
    inner = non_none(tp)
    if len([a for a in _union_args(inner) if a is not type(None)]) > 1:
        return []  # a union of several types: no one type to blame the value against
    origin = typing.get_origin(inner)
    if origin is typing.Literal:
        allowed = typing.get_args(inner)
        if value in allowed:
            return []
        return [f"{where} {value!r} is not one of {', '.join(map(str, allowed))}{_did_you_mean(value, allowed)}"]
    if is_sequence(inner):
        if isinstance(value, str):
            value = yaml_value(value)
        if not isinstance(value, (list, tuple)):
            return [f"{where} {value!r} is not a list; expected {describe(tp)}"]
        items = [a for a in typing.get_args(inner) if a is not Ellipsis]
        if len(items) != 1:
            return []
        return [p for k, item in enumerate(value) for p in _explain(item, items[0], f"{where}[{k}]")]
    if dataclasses.is_dataclass(inner):
        return _explain_fields(value, inner, where)
    if inner is dict or origin is dict:
        return [] if isinstance(value, dict) else [f"{where} {value!r} is not a mapping; expected {{key: value}}"]
    parser = _type_parser(inner)
    if isinstance(value, (list, dict)) or (parser is not None and _parse_value(parser, "x", value) is _INVALID):
        return [f"{where} {value!r} is invalid; expected {describe(tp)}"]
    return []


def _explain_fields(value: Any, cls: type, where: str) -> list[str]:
    """:func:`_explain` for a dataclass written as a mapping: unknown and missing keys, then each key's value."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    form = "{" + ", ".join(f"{n}: ..." for n in fields) + "}"
    if isinstance(value, str):
        value = yaml_value(value)
    if dataclasses.is_dataclass(value):
        value = {n: getattr(value, n) for n in fields}
    if not isinstance(value, dict):
        return [f"{where} {value!r} is not a mapping; write {form}"]
    out = [f"{where}: unknown key {key}{_did_you_mean(key, list(fields))}; the keys are {', '.join(fields)}"
           for key in value if key not in fields]
    for name, f in fields.items():
        if name not in value:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                out.append(f"{where}: {name} is missing; expected {describe(hints[name])}")
            continue
        out += _explain(value[name], hints[name], f"{where}.{name}")
    return out


def yaml_value(text: str) -> Any:
    """A command-line string read as YAML (JSON is YAML); the string itself when it is not valid YAML."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text

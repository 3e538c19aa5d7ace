"""Run an entry function as a command line, with one typed check for flags, YAML configs and pipeline sections.

Every entry point is a typed function with a docstring per argument (litgpt style)::

    def main(images: Path, out: Path, batch_size: int = 16, mode: Literal["greedy", "beam"] = "greedy",
             overwrite: bool = False) -> None:
        '''Predict masks.

        Args:
            images: folder of images to segment.
            out: folder for the masks.
            batch_size: images per forward pass.
            mode: decoding.
            overwrite: replace existing outputs.
        '''

    if __name__ == "__main__":
        run(main)

Values are checked against the signature by jsonargparse, whatever their source: ``--config some.yaml`` (keys are
the parameter names, dashes or underscores), flags (which override the file), and the pipeline's per-stage sections
(:func:`check_options`). A wrong type, a value outside a ``Literal[...]``, an unknown key or a missing required option
is a :class:`segcap.errors.ConfigError` naming the file (or ``command line``), the key and what is expected; :func:`run`
prints it on one line and exits with code 2.

Command-line forms: ``--batch-size 3`` or ``--batch_size=3``; a ``bool`` is ``--overwrite`` / ``--no-overwrite``
(or ``--overwrite=false``); a ``list``/``tuple`` takes several values (``--names a b``) or one YAML/JSON list
(``--names '[a, b]'``); a list of mappings, such as segmentation.train's ``sources``, is written as in the YAML config,
one YAML/JSON list (``--sources '[{kind: loveda, root: /data/LoveDA}, {kind: drone, root: data/drone, gsd: 0.05}]'``)
or one mapping per value (``--sources '{kind: loveda, root: /data/LoveDA}' '{kind: drone, ...}'``); ``null`` clears
an optional option (``--eval-captions null``; ``eval_captions: null`` in YAML); ``positional`` names parameters given
without a flag; ``aliases`` adds flags (``{"from_stage": ["--from"]}``). The docstring is the ``--help``.

A value that does not fit is named down to its part: ``sources[0].kind 'lovedaa' is not one of drone, loveda,
openearthmap, folder (did you mean loveda?)``, ``sources[0]: unknown key clas_map (did you mean class_map?)``,
``sources[0].gsd 'fine' is invalid; expected a number or null``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import difflib
import functools
import inspect
import os
import sys
import types
import typing
from argparse import ArgumentError
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
from docstring_parser import parse as parse_docstring

from segcap.atomic import WRITE_ERRNOS, write_failure_message
from segcap.errors import ConfigError, SegcapError, one_line
from segcap.resources import config_path, configs_dir, looked_for

if typing.TYPE_CHECKING:
    from jsonargparse import ArgumentParser

# Set for the process when a command starts (never on import): albumentations otherwise asks PyPI for updates on
# import, tokenizers warns about forked workers, and matplotlib needs no display.
COMMAND_ENV = {"NO_ALBUMENTATIONS_UPDATE": "1", "TOKENIZERS_PARALLELISM": "false", "MPLBACKEND": "Agg"}

COMMAND_LINE = "command line"
_EPILOG = ("--config FILE.yaml sets any option (keys are the names above, dashes or underscores); flags override it. "
           "A switch is --x / --no-x; a list takes several values (--x a b) or one YAML/JSON list (--x '[a, b]'); "
           "a list of mappings is one YAML/JSON list (--sources '[{kind: loveda, root: /data/LoveDA}]'); 'null' "
           "clears an optional value (--x null, or x: null in YAML).")


# ---------------------------------------------------------------- the typed check (jsonargparse)
@functools.cache
def _typed_parser(fn: Callable[..., Any]) -> ArgumentParser:
    """jsonargparse's parser for ``fn``'s signature: it converts and checks values, one key at a time."""
    # imported here, not on top: 0.1-0.3 s that every library import of a module using segcap.cli would pay
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False, prog=_prog(fn), description=_summary(fn), epilog=_EPILOG)
    parser.add_function_arguments(fn, as_group=False)
    for action in parser._actions:  # one key is checked at a time: parse() reports missing required options itself
        action.required = False
    return parser


def _params(fn: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    return {n: p for n, p in inspect.signature(fn).parameters.items()
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


@functools.cache
def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    return typing.get_type_hints(fn)


def _union_args(tp: Any) -> tuple[Any, ...]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return typing.get_args(tp)
    return (tp,)


def _allows_none(tp: Any) -> bool:
    return tp is Any or type(None) in _union_args(tp)


def _non_none(tp: Any) -> Any:
    args = [a for a in _union_args(tp) if a is not type(None)]
    return args[0] if len(args) == 1 else tp


def _is_sequence(tp: Any) -> bool:
    tp = _non_none(tp)
    return tp in (list, tuple) or typing.get_origin(tp) in (list, tuple, Sequence, typing.Sequence)


def _describe(tp: Any) -> str:
    """What a value of type ``tp`` looks like, for error messages."""
    args = _union_args(tp)
    if len(args) > 1:
        parts = [_describe(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or null" if type(None) in args else "")
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return "one of " + ", ".join(str(v) for v in typing.get_args(tp))
    if tp in (list, tuple) or origin in (list, tuple, Sequence, typing.Sequence):
        inner = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return "a list" + (f" (each {_describe(inner[0])})" if len(inner) == 1 else "")
    if tp is dict or origin is dict:
        return "a mapping such as {key: value}"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", Path: "a path"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def _check(fn: Callable[..., Any], options: dict[str, Any], source: str, flags: bool = False
           ) -> tuple[dict[str, Any], list[str]]:
    """Convert and check ``options`` against ``fn``'s signature; return (typed values, problems)."""
    params, hints = _params(fn), _hints(fn)
    parser = _typed_parser(fn)
    values: dict[str, Any] = {}
    problems: list[str] = []
    unknown = []
    for key, value in options.items():
        name = str(key).replace("-", "_")
        if name not in params:
            unknown.append(str(key))
            continue
        label = _flag(name) if flags else name
        tp = hints.get(name, Any)
        shown = " ".join(map(str, value)) if flags and isinstance(value, list) else repr(value)
        expected = f"expected {_describe(tp)}"
        if params[name].default is not inspect.Parameter.empty:
            expected += f" (default: {_show_default(params[name].default)})"
        if value is None and not _allows_none(tp):
            problems.append(f"{source}: {label} cannot be null; {expected}")
            continue
        if isinstance(value, str) and value == "" and Path in _union_args(tp):
            fix = f"; to clear it write {'null' if not flags else label + ' null'}" if _allows_none(tp) else ""
            problems.append(f"{source}: {label} is an empty path{fix}")
            continue
        try:
            ns = parser.parse_object({name: copy.deepcopy(value)}, defaults=False)
        except (ArgumentError, TypeError, ValueError, KeyError):
            parts = _explain(value, tp, label) if _structured(tp) else []
            problems += [f"{source}: {p}" for p in parts] or [f"{source}: {label} {shown} is invalid; {expected}"]
            continue
        values[name] = ns[name]
    if unknown:
        shown_names = [_flag(n) for n in params] if flags else list(params)
        what = []
        for u in unknown:
            close = difflib.get_close_matches(u.lstrip("-").replace("-", "_"), list(params), n=1)
            hint = f" (did you mean {_flag(close[0]) if flags else close[0]}?)" if close else ""
            what.append(u + hint)
        problems.append(f"{source}: unknown option(s) {', '.join(what)}; valid options: {', '.join(shown_names)}")
    return values, problems


def _structured(tp: Any) -> bool:
    """Whether values of ``tp`` have parts to name when one is wrong: lists, mappings, dataclasses."""
    tp = _non_none(tp)
    return _is_sequence(tp) or tp is dict or typing.get_origin(tp) is dict or dataclasses.is_dataclass(tp)


def _did_you_mean(value: Any, choices: Sequence[Any]) -> str:
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _fits_scalar(value: Any, tp: Any) -> bool:
    """Whether a scalar ``value`` (as YAML or the command line gives it) can be a ``tp``; unknown types pass."""
    if isinstance(value, (list, dict)):
        return tp in (Any, list, dict)
    if tp is bool:
        return isinstance(value, bool) or str(value).lower() in ("true", "false")
    if tp in (int, float):
        if isinstance(value, bool):
            return False
        if isinstance(value, (int, float)):
            return tp is float or float(value).is_integer()
        try:
            (int if tp is int else float)(str(value))
        except ValueError:
            return False
        return True
    if tp in (str, Path):
        return isinstance(value, (str, os.PathLike))
    return True


def _explain(value: Any, tp: Any, where: str) -> list[str]:
    """Which parts of ``value`` do not fit ``tp``, each named by its place (``sources[0].kind``) with what is allowed
    there; empty when no part can be blamed (the caller then says the whole value is invalid)."""
    if hasattr(value, "as_dict"):  # jsonargparse's Namespace
        value = value.as_dict()
    if value is None:
        return [] if _allows_none(tp) else [f"{where} cannot be null; expected {_describe(tp)}"]
    inner = _non_none(tp)
    if len([a for a in _union_args(inner) if a is not type(None)]) > 1:
        return []  # a union of several types: no one type to blame the value against
    origin = typing.get_origin(inner)
    if origin is typing.Literal:
        allowed = typing.get_args(inner)
        if value in allowed:
            return []
        return [f"{where} {value!r} is not one of {', '.join(map(str, allowed))}{_did_you_mean(value, allowed)}"]
    if _is_sequence(inner):
        if isinstance(value, str):
            value = _yaml_value(value)
        if not isinstance(value, (list, tuple)):
            return [f"{where} {value!r} is not a list; expected {_describe(tp)}"]
        items = [a for a in typing.get_args(inner) if a is not Ellipsis]
        if len(items) != 1:
            return []
        return [p for k, item in enumerate(value) for p in _explain(item, items[0], f"{where}[{k}]")]
    if dataclasses.is_dataclass(inner):
        return _explain_fields(value, inner, where)
    if inner is dict or origin is dict:
        return [] if isinstance(value, dict) else [f"{where} {value!r} is not a mapping; expected {{key: value}}"]
    if not _fits_scalar(value, inner):
        return [f"{where} {value!r} is invalid; expected {_describe(tp)}"]
    return []


def _explain_fields(value: Any, cls: type, where: str) -> list[str]:
    """:func:`_explain` for a dataclass written as a mapping: unknown and missing keys, then each key's value."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    form = "{" + ", ".join(f"{n}: ..." for n in fields) + "}"
    if isinstance(value, str):
        value = _yaml_value(value)
    if not isinstance(value, dict):
        return [f"{where} {value!r} is not a mapping; write {form}"]
    out = [f"{where}: unknown key {key}{_did_you_mean(key, list(fields))}; the keys are {', '.join(fields)}"
           for key in value if key not in fields]
    for name, f in fields.items():
        if name not in value:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                out.append(f"{where}: {name} is missing; expected {_describe(hints[name])}")
            continue
        out += _explain(value[name], hints[name], f"{where}.{name}")
    return out


def _yaml_value(text: str) -> Any:
    """A command-line string read as YAML (JSON is YAML); the string itself when it is not valid YAML."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _show_default(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def check_options(fn: Callable[..., Any], options: dict[str, Any], source: str) -> dict[str, Any]:
    """Check a mapping of options for ``fn`` (keys are its parameter names, dashes allowed) and return them typed.

    Unknown keys, wrong types, values outside a ``Literal`` and ``null`` for a non-optional option are refused with
    one :class:`ConfigError` that names ``source`` (e.g. ``"configs/pipeline/synthetic.yaml, section llm"``), each
    key and what it expects. Only the given keys are returned (defaults are not filled in); ``null`` stays ``None``
    for an optional option, clearing it. Path-typed values become :class:`~pathlib.Path`.
    """
    values, problems = _check(fn, options, source)
    if problems:
        raise ConfigError(problems)
    return values


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


# ---------------------------------------------------------------- the command line
def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _prog(fn: Callable[..., Any]) -> str | None:
    module = getattr(fn, "__module__", "") or ""
    if module == "__main__":  # under `python -m pkg.mod` the module's real name is on its spec
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        module = spec.name if spec is not None else ""
    return f"python -m {module}" if module else None


def _summary(fn: Callable[..., Any]) -> str:
    doc = inspect.getdoc(fn) or ""
    return doc.split("\n\nArgs:")[0].split("\nArgs:")[0].strip()


class _ArgvParser(argparse.ArgumentParser):
    """argparse, but a usage error is a :class:`ConfigError` (one line, exit 2 through :func:`run`)."""

    def error(self, message: str) -> typing.NoReturn:
        raise ConfigError(f"{COMMAND_LINE}: {message}; see --help")


def _argv_parser(fn: Callable[..., Any], positional: Sequence[str], aliases: dict[str, list[str]]
                 ) -> argparse.ArgumentParser:
    """argparse for the command line's *forms* (flags, switches, lists, positionals, aliases, --help).

    Every value stays a string here; :func:`_check` converts and checks it, exactly as it checks a YAML value. Options
    not given are absent (``SUPPRESS``), so a flag overrides the config file only when it is given.
    """
    docs = _arg_docs(fn)
    parser = _ArgvParser(prog=_prog(fn), description=_summary(fn), epilog=_EPILOG, allow_abbrev=False,
                         argument_default=argparse.SUPPRESS)
    parser.add_argument("--config", help="YAML file setting any of the options below (flags override it)")
    hints = _hints(fn)
    for name, param in _params(fn).items():
        tp = hints.get(name, Any)
        default = "" if param.default is inspect.Parameter.empty else f"; default: {_show_default(param.default)}"
        kw: dict[str, Any] = {"help": f"{docs.get(name, '')} ({_describe(tp)}{default})".replace("%", "%%")}
        if name in positional:
            nargs = "*" if _is_sequence(tp) else "?"
            parser.add_argument(name, nargs=nargs, metavar=name.upper(), **kw)
            continue
        flags = [_flag(name)] + ([f"--{name}"] if "_" in name else []) + list(aliases.get(name, []))
        if _non_none(tp) is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif _is_sequence(tp):
            kw.update(nargs="+", metavar=name.upper())
        else:
            kw["metavar"] = name.upper()
        parser.add_argument(*flags, dest=name, **kw)
    return parser


def _arg_docs(fn: Callable[..., Any]) -> dict[str, str]:
    """Each parameter's docstring line (``Args:`` section), for ``--help``."""
    return {p.arg_name: " ".join((p.description or "").split()) for p in parse_docstring(inspect.getdoc(fn) or "").params}


def _split_argv(fn: Callable[..., Any], args: Sequence[str], positional: Sequence[str],
                aliases: dict[str, list[str]]) -> tuple[str | None, dict[str, Any], list[str]]:
    """Split the command line into (config path, {name: raw value}, problems); unknown flags are problems."""
    ns, extra = _argv_parser(fn, positional, aliases).parse_known_args(list(args))
    raw = vars(ns)
    config = raw.pop("config", None)
    for name in positional:
        if raw.get(name) == []:  # an absent '*' positional
            raw.pop(name)
    unknown, stray = [], []
    for i, tok in enumerate(extra):
        if tok.startswith("--"):
            unknown.append(tok.partition("=")[0])
        elif not (i > 0 and extra[i - 1].startswith("--") and "=" not in extra[i - 1]):  # an unknown flag's value
            stray.append(tok)
    problems = []
    if stray:
        problems.append(f"{COMMAND_LINE}: unexpected argument(s) {' '.join(stray)}; options are given as --name value")
    if unknown:
        problems.extend(_check(fn, dict.fromkeys(unknown), COMMAND_LINE, flags=True)[1])
    hints = _hints(fn)
    for name, value in list(raw.items()):
        if not isinstance(value, list) or name in positional:
            continue
        if value == ["null"]:  # `--names null` clears a list option
            raw[name] = "null"
        elif len(value) == 1 and value[0].lstrip().startswith("["):  # one YAML/JSON list: `--sources '[{...}]'`
            try:
                raw[name] = yaml.safe_load(value[0])
            except yaml.YAMLError as e:
                raw.pop(name)
                problems.append(f"{COMMAND_LINE}: {_flag(name)} {value[0]} is not a valid YAML/JSON list "
                                f"({_yaml_problem(e)}); write it as in the YAML config, e.g. "
                                f"{_flag(name)} '[{{key: value, ...}}, ...]'")
        elif _maps(hints.get(name, Any)):  # one mapping per value: `--sources '{kind: loveda, root: ...}'`
            raw[name] = [_yaml_value(v) if v.lstrip().startswith("{") else v for v in value]
    return config, raw, problems


def _maps(tp: Any) -> bool:
    """Whether ``tp`` is a list whose items are mappings or dataclasses (written ``{key: value}``)."""
    items = [a for a in typing.get_args(_non_none(tp)) if a is not Ellipsis]
    return (_is_sequence(tp) and len(items) == 1
            and (dataclasses.is_dataclass(items[0]) or items[0] is dict or typing.get_origin(items[0]) is dict))


def _yaml_problem(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    what = getattr(e, "problem", None) or str(e).splitlines()[0]
    return f"{what} at character {mark.column + 1}" if mark is not None else what


def parse(fn: Callable[..., Any], args: Sequence[str] | None = None, positional: Sequence[str] = (),
          aliases: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Parse ``args`` (default ``sys.argv[1:]``) for ``fn``: config file first, flags over it; return every kwarg.

    ``positional`` names parameters given without a flag; ``aliases`` adds flags, e.g. ``{"from_stage": ["--from"]}``.
    ``--help`` prints the help and exits 0; every problem with the options is one :class:`ConfigError`.
    """
    return _parse(fn, args, positional, aliases)[0]


def _parse(fn: Callable[..., Any], args: Sequence[str] | None, positional: Sequence[str],
           aliases: dict[str, list[str]] | None) -> tuple[dict[str, Any], dict[str, str]]:
    """:func:`parse`, and where each given option came from (the config file's path, or ``command line``)."""
    args = list(sys.argv[1:] if args is None else args)
    config, raw, problems = _split_argv(fn, args, positional, aliases or {})
    given = set(raw)
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    if config is not None:
        file_options = load_yaml(config)
        given |= {str(k).replace("-", "_") for k in file_options}
        file_values, file_problems = _check(fn, file_options, config)
        values.update(file_values)
        origins.update(dict.fromkeys(file_values, config))
        problems = file_problems + problems
    flag_values, flag_problems = _check(fn, raw, COMMAND_LINE, flags=True)
    values.update(flag_values)
    origins.update(dict.fromkeys(flag_values, COMMAND_LINE))
    problems += flag_problems
    params = _params(fn)
    missing = [n for n, p in params.items() if p.default is inspect.Parameter.empty and n not in given]
    if missing:
        problems.append(f"{COMMAND_LINE}: missing required option(s) "
                        + ", ".join(n if n in positional else _flag(n) for n in missing)
                        + "; give them as flags or in the --config file")
    if problems:
        raise ConfigError(problems)
    return {n: values.get(n, p.default) for n, p in params.items()}, origins


def name_sources(error: ConfigError, origins: dict[str, str]) -> ConfigError:
    """``error`` with each problem about an option that came from a config file prefixed by that file's path.

    An entry point checks values (``hidden_size must be a positive integer``) without knowing where they came from;
    the command line does: a problem that starts with an option's name (``tiny_model``, ``--batch-size``) given in
    the --config file is about that file."""
    def source(problem: str) -> str | None:
        for name, origin in origins.items():
            if origin == COMMAND_LINE or problem.startswith(origin):
                continue
            for form in (name, _flag(name)):
                if problem.startswith(form) and not (problem[len(form):len(form) + 1].isalnum()
                                                    or problem[len(form):len(form) + 1] == "_"):
                    return origin
        return None

    problems = [f"{where}: {p}" if (where := source(p)) else p for p in error.problems]
    return error if problems == error.problems else ConfigError(problems)


def run(fn: Callable[..., Any], args: Sequence[str] | None = None, positional: Sequence[str] = (),
        aliases: dict[str, list[str]] | None = None) -> Any:
    """Parse the command line for ``fn``, call it, and turn user errors into one message and exit code 2.

    User errors are :class:`SegcapError` (bad options and input, found before the work) and the file system's refusals
    during the work (a full disk, a disk turned read-only, a permission: :data:`segcap.atomic.WRITE_ERRNOS`), which
    say what this run completed and how to go on (:func:`segcap.atomic.write_failure_message`).
    """
    for key, value in COMMAND_ENV.items():
        os.environ.setdefault(key, value)
    origins: dict[str, str] = {}
    try:
        kwargs, origins = _parse(fn, args, positional, aliases)
        return fn(**kwargs)
    except ConfigError as e:
        e = name_sources(e, origins)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except SegcapError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except OSError as e:
        if e.errno not in WRITE_ERRNOS:
            raise
        print(f"error: {write_failure_message(e)}", file=sys.stderr)
        sys.exit(SegcapError.exit_code)
    except KeyboardInterrupt:
        print("interrupted; completed outputs are kept, rerun the same command to resume", file=sys.stderr)
        sys.exit(130)

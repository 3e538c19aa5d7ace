"""Run an entry function as a command line: ``--config some.yaml`` fills its options, flags override them.

Every entry point is a typed function (:func:`segcap.options.checked`, or :func:`~segcap.options.gathers` where it
checks its options itself) with a docstring per argument or option groups (:class:`segcap.options.Group`), run by ``if __name__ == "__main__": run(main)``. The values are checked by
:mod:`segcap.options`, whatever their source; a user error is one line on stderr and exit code 2. Flags:
``--batch-size 3`` or ``--batch_size=3``; a ``bool`` is ``--overwrite`` / ``--no-overwrite``; a list takes several
values (``--names a b``) or one YAML/JSON list; a list of mappings (``sources``) is one YAML/JSON list or one mapping
per value; ``null`` clears an optional option; ``positional`` names parameters given without a flag; ``aliases``
adds flags (``{"from_stage": ["--from"]}``). The docstrings are the help."""

from __future__ import annotations

import argparse
import os
import sys
import typing
from collections.abc import Callable, Sequence
from typing import Any

import yaml

from segcap import options as opt
from segcap.atomic import WRITE_ERRNOS, write_failure_message
from segcap.errors import ConfigError, SegcapError, one_line
from segcap.options import COMMAND_LINE, check_options, config_kwargs, load_yaml, name_sources  # noqa: F401 (also here)

# set when a command starts: albumentations asks PyPI for updates, tokenizers warns of forks, matplotlib: no display
COMMAND_ENV = {"NO_ALBUMENTATIONS_UPDATE": "1", "TOKENIZERS_PARALLELISM": "false", "MPLBACKEND": "Agg"}
_EPILOG = ("--config FILE.yaml sets any option (keys are the names above, dashes or underscores); flags override it. "
           "A switch is --x / --no-x; a list takes several values (--x a b) or one YAML/JSON list (--x '[a, b]'); "
           "a list of mappings is one YAML/JSON list (--sources '[{kind: loveda, root: /data/LoveDA}]'); 'null' "
           "clears an optional value (--x null, or x: null in YAML); a group's options may also be written under its name "
           "in YAML (data: {crop_size: 64}).")


class _ArgvParser(argparse.ArgumentParser):
    """argparse, but a usage error is a :class:`ConfigError` (one line, exit 2 through :func:`run`)."""
    def error(self, message: str) -> typing.NoReturn:
        raise ConfigError(f"{COMMAND_LINE}: {message}; see --help")


def _argv_parser(fn: Callable[..., Any], positional: Sequence[str], aliases: dict[str, list[str]]) -> _ArgvParser:
    """argparse for the command line's forms (flags, switches, lists, positionals, aliases, --help); every value stays
    a string, checked as a YAML value is. Options not given are absent, so a flag overrides the file only if given."""
    module = fn.__module__ if fn.__module__ != "__main__" else getattr(sys.modules["__main__"].__spec__, "name", "")
    doc = (fn.__doc__ or "").split("Args:")[0].strip()
    parser = _ArgvParser(prog=f"python -m {module}" if module else None, description=" ".join(doc.split()),
                         epilog=_EPILOG, allow_abbrev=False, argument_default=argparse.SUPPRESS)
    parser.add_argument("--config", help="YAML file setting any of the options below (flags override it)")
    docs, sections = opt.arg_docs(fn), {None: parser}
    for g, cls in opt.groups_of(fn).items():  # a group's options under its docstring's first line
        sections[g] = parser.add_argument_group((cls.__doc__ or g).strip().splitlines()[0].rstrip("."))
    for name, option in opt.options_of(fn).items():
        tp, add = option.type, sections[option.group].add_argument
        default = "" if option.default is opt.EMPTY else f"; default: {opt.show_default(option.default)}"
        kw: dict[str, Any] = {"help": f"{docs.get(name, '')} ({opt.describe(tp)}{default})".replace("%", "%%")}
        if name in positional:
            add(name, nargs="*" if opt.is_sequence(tp) else "?", metavar=name.upper(), **kw)
            continue
        if opt.non_none(tp) is bool:
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw.update(nargs="+" if opt.is_sequence(tp) else None, metavar=name.upper())
        flags = [opt.flag(name)] + ([f"--{name}"] if "_" in name else []) + list(aliases.get(name, []))
        add(*flags, dest=name, **kw)
    return parser


def _split_argv(fn: Callable[..., Any], args: Sequence[str], positional: Sequence[str],
                aliases: dict[str, list[str]]) -> tuple[str | None, dict[str, Any], list[str]]:
    """Split the command line into (config path, {name: raw value}, problems); unknown flags are problems."""
    ns, extra = _argv_parser(fn, positional, aliases).parse_known_args(list(args))
    raw = {k: v for k, v in vars(ns).items() if not (k in positional and v == [])}  # an absent '*' positional
    config = raw.pop("config", None)
    unknown = [t.partition("=")[0] for t in extra if t.startswith("--")]
    stray = [t for i, t in enumerate(extra)  # not an unknown flag's value
             if not t.startswith("--") and not (i and extra[i - 1].startswith("--") and "=" not in extra[i - 1])]
    problems = []
    if stray:
        problems.append(f"{COMMAND_LINE}: unexpected argument(s) {' '.join(stray)}; options are given as --name value")
    if unknown:
        problems += opt.typed_options(fn, dict.fromkeys(unknown), COMMAND_LINE, flags=True)[1]
    for name, value in [(n, v) for n, v in raw.items() if isinstance(v, list) and n not in positional]:
        if value == ["null"]:  # `--names null` clears a list option
            raw[name] = "null"
        elif len(value) == 1 and value[0].lstrip().startswith("["):  # one YAML/JSON list: `--sources '[{...}]'`
            try:
                raw[name] = yaml.safe_load(value[0])
            except yaml.YAMLError as e:
                raw.pop(name)
                problems.append(f"{COMMAND_LINE}: {opt.flag(name)} {value[0]} is not a valid YAML/JSON list "
                                f"({one_line(e)}); write it as in the YAML config, e.g. {opt.flag(name)} '[{{key: "
                                "value, ...}, ...]'")
        elif opt.is_mapping_list(opt.options_of(fn)[name].type):  # one mapping per value: `--sources '{...}' ...`
            raw[name] = [opt.yaml_value(v) if v.lstrip().startswith("{") else v for v in value]
    return config, raw, problems


def parse(fn: Callable[..., Any], args: Sequence[str] | None = None, positional: Sequence[str] = (),
          aliases: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Parse ``args`` (default ``sys.argv[1:]``) for ``fn``, config file first, flags over it: every option, flat
    (:func:`segcap.options.grouped` groups them); ``--help`` exits 0; every problem is one :class:`ConfigError`."""
    return _parse(fn, args, positional, aliases)[0]


def _parse(fn: Callable[..., Any], args: Sequence[str] | None, positional: Sequence[str],
           aliases: dict[str, list[str]] | None) -> tuple[dict[str, Any], dict[str, str]]:
    """:func:`parse`, and where each given option came from (the config file's path, or ``command line``)."""
    config, raw, problems = _split_argv(fn, list(sys.argv[1:] if args is None else args), positional, aliases or {})
    file_options = load_yaml(config) if config is not None else {}
    file_values, file_problems = opt.typed_options(fn, file_options, str(config))
    flag_values, flag_problems = opt.typed_options(fn, raw, COMMAND_LINE, flags=True)
    origins = {**dict.fromkeys(file_values, str(config)), **dict.fromkeys(flag_values, COMMAND_LINE)}
    given = set(raw) | set(file_values) | {str(k).replace("-", "_") for k in file_options}
    params = opt.options_of(fn)
    missing = [n if n in positional else opt.flag(n) for n, p in params.items() if p.default is opt.EMPTY and n not in given]
    problems = file_problems + problems + flag_problems
    if missing:
        problems.append(f"{COMMAND_LINE}: missing required option(s) {', '.join(missing)}; give them as flags or in "
                        "the --config file")
    if problems:
        raise ConfigError(problems)
    values = {**file_values, **flag_values}
    return {n: values.get(n, p.default) for n, p in params.items()}, origins


def run(fn: Callable[..., Any], args: Sequence[str] | None = None, positional: Sequence[str] = (),
        aliases: dict[str, list[str]] | None = None) -> Any:
    """Parse the command line for ``fn`` and call it; a :class:`SegcapError`, or the file system's refusal during the
    work (a full or read-only disk, a permission), is one message (:func:`write_failure_message`) and exit code 2."""
    for key, value in COMMAND_ENV.items():
        os.environ.setdefault(key, value)
    origins: dict[str, str] = {}
    try:
        kwargs, origins = _parse(fn, args, positional, aliases)
        call = fn.__wrapped__ if getattr(fn, "__checked__", False) else fn  # its values checked by _parse
        return call(**opt.grouped(fn, kwargs))  # a group's options become its object
    except SegcapError as e:
        e = name_sources(e, origins) if isinstance(e, ConfigError) else e  # a problem of a --config file's value
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

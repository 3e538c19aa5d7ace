"""Run an entry function as a command line.

Every entry point is a typed function with a docstring per argument (litgpt style)::

    def main(images: Path, out: Path, batch_size: int = 16, overwrite: bool = False) -> None:
        '''Predict masks.

        Args:
            images: folder of images to segment.
            out: folder for the masks.
            batch_size: images per forward pass.
            overwrite: replace existing outputs.
        '''

    if __name__ == "__main__":
        run(main)

:func:`run` builds an argparse parser from the signature: ``batch_size`` becomes ``--batch-size`` (``--batch_size``
works too), a ``bool`` becomes ``--overwrite`` / ``--no-overwrite``, ``list[...]`` takes several values, ``Literal``
gives a closed set of choices, and the docstring line is the help. ``--config some.yaml`` fills any argument (keys are
the parameter names) and flags override it; an unknown key is an error. A :class:`segcap.errors.SegcapError` becomes
one line on stderr and exit code 2; argparse usage errors exit 2 as well.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
from docstring_parser import parse as parse_doc

from segcap.errors import ConfigError, SegcapError

# Set for the process when a command starts (never on import): albumentations otherwise asks PyPI for updates on
# import, tokenizers warns about forked workers, and matplotlib needs no display.
COMMAND_ENV = {"NO_ALBUMENTATIONS_UPDATE": "1", "TOKENIZERS_PARALLELISM": "false", "MPLBACKEND": "Agg"}


def _arg_docs(fn: Callable[..., Any]) -> tuple[str, dict[str, str]]:

    doc = parse_doc(inspect.getdoc(fn) or "")
    summary = "\n\n".join(s for s in (doc.short_description, doc.long_description) if s)
    return summary, {p.arg_name: (p.description or "").replace("\n", " ") for p in doc.params}


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _mapping(text: str) -> dict:
    value = yaml.safe_load(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a mapping such as '{{seed: 1}}', got {text!r}")
    return value


def _converter(tp: Any) -> Callable[[str], Any]:
    if tp in (int, float, str, Path):
        return tp
    if tp is dict or typing.get_origin(tp) is dict:
        return _mapping
    return str


def build_parser(fn: Callable[..., Any], positional: Sequence[str] = (),
                 aliases: dict[str, list[str]] | None = None) -> argparse.ArgumentParser:
    """The argparse parser for ``fn``'s keyword arguments (see module docstring)."""
    summary, docs = _arg_docs(fn)
    module = getattr(fn, "__module__", "") or ""
    if module == "__main__":  # under `python -m pkg.mod` the module's real name is on its spec
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        module = spec.name if spec is not None else ""
    prog = f"python -m {module}" if module else None
    parser = argparse.ArgumentParser(
        prog=prog, description=summary, formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False
    )
    parser.add_argument("--config", type=Path, help="YAML file setting any of the options below (flags override it)")
    hints = typing.get_type_hints(fn)
    for name, param in inspect.signature(fn).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        tp, _ = _unwrap_optional(hints.get(name, str))
        origin = typing.get_origin(tp)
        kw: dict[str, Any] = {"help": docs.get(name, "") or " "}
        if param.default is not inspect.Parameter.empty:
            kw["default"] = param.default
        if tp is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif origin in (list, tuple, Sequence, typing.Sequence) or tp in (list, tuple):
            inner = typing.get_args(tp)[0] if typing.get_args(tp) else str
            inner, _ = _unwrap_optional(inner)
            kw.update(nargs="+", type=_converter(inner))
        elif origin is typing.Literal:
            kw.update(choices=list(typing.get_args(tp)), type=type(typing.get_args(tp)[0]))
        else:
            kw["type"] = _converter(tp)
        if name in positional:
            if kw.get("nargs") != "+" and "default" in kw:
                kw["nargs"] = "?"
            kw.pop("action", None) if tp is not bool else None
            parser.add_argument(name, **kw)
        else:
            flags = [f"--{name.replace('_', '-')}"] + ([f"--{name}"] if "_" in name else [])
            flags += list((aliases or {}).get(name, []))
            parser.add_argument(*flags, dest=name, **kw)
    return parser


def parse(fn: Callable[..., Any], args: Sequence[str] | None = None, positional: Sequence[str] = (),
          aliases: dict[str, list[str]] | None = None) -> dict[str, Any]:
    """Parse ``args`` (default ``sys.argv[1:]``) for ``fn``: config file first, flags over it; return kwargs.

    ``positional`` names parameters given without a flag; ``aliases`` adds flags, e.g. ``{"from_stage": ["--from"]}``.
    """
    parser = build_parser(fn, positional, aliases)
    args = list(sys.argv[1:] if args is None else args)
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", type=Path)
    known, _ = pre.parse_known_args(args)
    params = inspect.signature(fn).parameters
    if known.config is not None:
        defaults = config_kwargs(fn, known.config)
        parser.set_defaults(**defaults)
        for action in parser._actions:  # a value from the config satisfies a required option
            if action.dest in defaults:
                action.required = False
                if action.dest in positional:
                    action.nargs = "?" if action.nargs is None else ("*" if action.nargs == "+" else action.nargs)
    ns = vars(parser.parse_args(args))
    ns.pop("config", None)
    missing = [n for n, p in params.items() if p.default is inspect.Parameter.empty and ns.get(n) is None]
    if missing:
        parser.error("missing required option(s): " + ", ".join(f"--{m.replace('_', '-')}" for m in missing))
    return ns


def config_kwargs(fn: Callable[..., Any], path: str | Path) -> dict[str, Any]:
    """Read a YAML config for ``fn``: keys must be its parameter names (dashes allowed); Path-typed values
    become Paths. An unknown key is a :class:`ConfigError` that lists the valid ones."""
    cfg = load_yaml(path)
    params = inspect.signature(fn).parameters
    unknown = sorted(k for k in cfg if k.replace("-", "_") not in params)
    if unknown:
        raise ConfigError(f"{path}: unknown option(s) {', '.join(unknown)}; valid options: {', '.join(params)}")
    out = {k.replace("-", "_"): v for k, v in cfg.items()}
    hints = typing.get_type_hints(fn)
    for k, v in out.items():
        tp, _ = _unwrap_optional(hints.get(k, str))
        if tp is Path and v is not None:
            out[k] = Path(v)
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with a clear error for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}; pass a path to an existing YAML file (see configs/)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option: value at the top level")
    return data


def run(fn: Callable[..., Any], args: Sequence[str] | None = None, positional: Sequence[str] = (),
        aliases: dict[str, list[str]] | None = None) -> Any:
    """Parse the command line for ``fn``, call it, and turn user errors into one message and exit code 2."""
    for key, value in COMMAND_ENV.items():
        os.environ.setdefault(key, value)
    try:
        kwargs = parse(fn, args, positional, aliases)
        return fn(**kwargs)
    except SegcapError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print("interrupted; completed outputs are kept, rerun the same command to resume", file=sys.stderr)
        sys.exit(130)

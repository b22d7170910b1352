"""What every command line of the toolkit shares: ``--version``, ``--config FILE``, ``--langs``-style
comma lists, the executor flags and flags built from config dataclasses. (The ``main`` skeleton,
``@command(PROG)``, is ``shards.errors.command``, where ``UserError`` is.)

``--config run.yaml`` (or ``.json``) holds settings by flag name, with or without the dashes
(``unit-size: 500``, ``unit_size: 500``, ``--unit-size: 500``); flags on the command line
override the file. A setting the command does not know is refused, naming the ones it does, as
a mistyped flag would be. Lists are given as YAML lists or as the flag's own comma form. The
stage's ``config.json`` records the resolved settings, so a run can be repeated from it.

A stage's settings are its config dataclass; a field declared with ``option(default, help)`` is also
a flag, added by ``add_options`` and read back by ``from_args``, so its default is written once, in
the dataclass, and ``--help`` shows it from there. (A small reading of dataclass fields rather than
a dataclass-to-argparse library: the flags keep argparse's own actions, types and groups.)
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from shards.versions import add_version_flag

from pipeline.runtime.executors import DEFAULT_UNIT_RETRIES


def _subcommands(parser: argparse.ArgumentParser) -> dict:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def comma_list(*texts: str | None) -> list[str]:
    """The items of one or more comma-separated texts (a flag given once or repeated), stripped,
    empty ones dropped: ``comma_list("a, b", "c,")`` is ``["a", "b", "c"]``."""
    return [item.strip() for text in texts for item in (text or "").split(",") if item.strip()]


class HelpWithDefaults(argparse.HelpFormatter):
    """``--help`` shows each option's default, unless its text already says it or there is none."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text.lower() or "%(default)" in text or not action.option_strings:
            return text
        if action.default is None or action.default is False or action.default is argparse.SUPPRESS \
                or action.default == [] or action.nargs == 0:
            return text
        return f"{text} (default: %(default)s)"


class OldSpelling(argparse._StoreAction):
    """A flag stored as usual that also answers to an earlier name, with a one-line note when it is used.

    ``p.add_argument("--loader-workers", "--workers", action=OldSpelling, old=("--workers",), ...)``: the
    old name keeps scripts working; ``--help`` lists the new name first and says which name is the old one.
    """

    def __init__(self, option_strings, dest, old=(), **kwargs):
        self.old = tuple(old)
        unknown = [o for o in self.old if o not in option_strings]
        if unknown:
            raise ValueError(f"old spellings {unknown} must be among the flag's names {option_strings}")
        if kwargs.get("help") and self.old:
            kwargs["help"] += f" ({', '.join(self.old)} is its earlier name)"
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string in self.old:
            new = next(o for o in self.option_strings if o not in self.old and o.startswith("--"))
            print(f"{parser.prog}: note: {option_string} is now spelled {new}; read it as {new}", file=sys.stderr)
        super().__call__(parser, namespace, values, option_string)


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    """``--version`` on ``parser``; ``--config`` on it, or on each subcommand when it has them
    (call it once the subcommands are added)."""
    for target in [parser, *_subcommands(parser).values()]:
        target.formatter_class = HelpWithDefaults
    add_version_flag(parser)
    for target in _subcommands(parser).values() or [parser]:
        target.add_argument("--config", type=Path, metavar="FILE",
                            help="YAML or JSON file of settings by flag name (e.g. 'unit-size: 500'); "
                                 "flags given on the command line override it")


# A config of settings by flag name is a few KB; the cap keeps a wrong path (a dataset, /dev/zero)
# from being read whole.
MAX_CONFIG_BYTES = 256 * 1024


def _load(path: Path, parser: argparse.ArgumentParser) -> dict:
    from shards.bounded import UnreadableInput, read_regular_text

    try:
        text = read_regular_text(path, MAX_CONFIG_BYTES, "--config")
    except UnreadableInput as exc:
        parser.error(str(exc))
    try:
        doc = json.loads(text) if path.suffix == ".json" else _yaml(text)
    except (ValueError, RecursionError) as exc:
        kind = "JSON" if path.suffix == ".json" else "YAML"
        parser.error(f"--config {path}: not valid {kind} ({str(exc).splitlines()[0]})")
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        parser.error(f"--config {path}: holds a {type(doc).__name__}, not settings by flag name")
    return doc


def _yaml(text: str):
    """``text`` as YAML, refusing aliases (``*name``): a few hundred bytes of nested anchors expand to
    billions of nodes, and a file of settings by flag name has no use for them."""
    import yaml

    class NoAliases(yaml.SafeLoader):
        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(
                    None, None, f"it uses an alias (line {mark.line + 1}); aliases are not allowed, "
                    "write the value out", mark)
            return super().compose_node(parent, index)

    loader = NoAliases(text)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        raise ValueError(str(exc).strip()) from None
    finally:
        loader.dispose()


def _as_text(value, action: argparse.Action):
    """A config value as the string(s) the flag would be given (argparse then converts them)."""
    many = action.nargs in ("*", "+") or isinstance(action.nargs, int) or isinstance(action, argparse._AppendAction)
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value] if many else ",".join(str(v) for v in value)
    text = value if isinstance(value, str) else str(value)
    return [text] if many else text


def parse_args(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """``parser.parse_args(argv)`` with the ``--config`` file's settings as defaults."""
    probe = argparse.ArgumentParser(add_help=False)
    probe.add_argument("--config", type=Path)
    known, _ = probe.parse_known_args(argv)
    if known.config is None:
        return parser.parse_args(argv)
    target = parser
    for arg in sys.argv[1:] if argv is None else argv:
        if arg in _subcommands(parser):
            target = _subcommands(parser)[arg]
            break
    settings = _load(known.config, target)
    by_name = {}
    for action in target._actions:
        for option in action.option_strings:
            by_name[option.lstrip("-")] = action
            by_name[option.lstrip("-").replace("-", "_")] = action
    defaults, unknown = {}, []
    for key, value in settings.items():
        action = by_name.get(str(key).lstrip("-"))
        if action is None or action.dest in ("help", "version", "config"):
            unknown.append(str(key))
            continue
        if hasattr(action, "from_config"):  # a flag that reads its own config value (``--langs``)
            try:
                defaults[action.dest] = action.from_config(value)
            except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
                target.error(f"--config {known.config}: {key} {value!r} is not a valid value ({exc})")
        elif action.nargs == 0:  # a switch: true / false
            if not isinstance(value, bool):
                target.error(f"--config {known.config}: {key} is a switch; give true or false")
            defaults[action.dest] = action.const if value else action.default
        else:
            text, convert = _as_text(value, action), action.type or (lambda x: x)
            try:
                defaults[action.dest] = [convert(t) for t in text] if isinstance(text, list) else convert(text)
            except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
                target.error(f"--config {known.config}: {key} {value!r} is not a valid value ({exc})")
            if action.choices is not None and defaults[action.dest] not in action.choices:
                target.error(f"--config {known.config}: {key} {value!r} is not one of {sorted(action.choices)}")
        action.required = False
    if unknown:
        names = sorted({o.lstrip("-") for a in target._actions for o in a.option_strings} - {"help", "h", "version",
                                                                                         "config"})
        target.error(f"--config {known.config}: unknown setting(s) {', '.join(unknown)} for {target.prog} "
                     f"(it takes: {', '.join(names)})")
    target.set_defaults(**defaults)
    args = parser.parse_args(argv)
    args.config_given = sorted(defaults)  # the settings the file gave (a resume treats them as flags given)
    return args


# ---------------------------------------------------------------- config dataclasses as flags

def option(default=dataclasses.MISSING, help: str = "", *, flags: tuple[str, ...] = (), group: str | None = None,
           default_factory=dataclasses.MISSING, **argparse_kwargs):
    """A config dataclass field that is also a flag: ``lr: float = option(2e-4, "Adam's rate", type=float)``.

    The flag is ``--field-name`` unless ``flags`` names it (``("--loader-workers", "--workers")``); a bool
    field is a switch: ``--name`` when its default is False, and ``flags=("--no-name",)`` when it is True.
    ``group`` names the ``--help`` section (``add_options``' ``groups``); the other keywords go to
    ``add_argument`` as they are (``type``, ``choices``, ``metavar``, ``action``...).
    """
    meta = {"cli": {"help": help, "flags": tuple(flags), "group": group, "argparse": argparse_kwargs}}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def field_default(cls, name: str):
    """The default of one field of a config dataclass (for a flag written by hand, e.g. ``--langs``)."""
    return _default(next(f for f in dataclasses.fields(cls) if f.name == name))


def add_options(parser, cls, *, groups: dict | None = None, only=None) -> None:
    """A flag on ``parser`` for each ``option`` field of ``cls`` (those named in ``only``, if given), in
    field order, the field's default its default; fields with a ``group`` go to that argument group
    (``groups`` maps a group's name to its ``--help`` title; groups already on ``parser`` are reused)."""
    made: dict = {g.title: g for g in parser._action_groups}
    for f in dataclasses.fields(cls):
        spec = f.metadata.get("cli")
        if spec is None or (only is not None and f.name not in only):
            continue
        target = parser
        if spec["group"] is not None:
            title = (groups or {}).get(spec["group"], spec["group"])
            target = made.get(title) or made.setdefault(title, parser.add_argument_group(title))
        default, kwargs = _default(f), dict(spec["argparse"])
        if isinstance(default, bool) and "action" not in kwargs:
            kwargs["action"] = "store_false" if default else "store_true"
        flags = spec["flags"] or (f"--{f.name.replace('_', '-')}",)
        target.add_argument(*flags, dest=f.name, default=default, help=spec["help"], **kwargs)


def from_args(cls, args, **values):
    """``cls(**values)`` with every other field the ``args`` namespace holds taken from it."""
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    taken = {k: v for k, v in vars(args).items() if k in names and k not in values}
    return cls(**taken, **values)


# ---------------------------------------------------------------- executor flags



def _process_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of worker processes; give 1 or more")
    return value


def add_executor_args(parser) -> None:
    """The flags of where and how a stage's units run (``run_stage``'s keyword arguments)."""
    group = parser.add_argument_group("execution")
    group.add_argument("--executor", default="local", choices=["local", "ray", "inline"],
                       help="where units run: 'local' is a process pool on this machine; 'ray' one Ray task "
                       "per unit on a Ray cluster (--ray-address) or, without an address, on a local Ray "
                       "instance bound to 127.0.0.1; 'inline' this process (debugging)")
    group.add_argument("--workers", type=_process_count, default=max(1, min(8, os.cpu_count() or 1)),
                       help="worker processes for the local executor, CPUs of a local Ray instance "
                       "(default: cores, at most 8)")
    group.add_argument("--ray-address", default=None,
                       help="join this Ray cluster (HEAD:6379, as printed by `ray start --head`; default: "
                       "$RAY_ADDRESS, else a local instance). Never expose a Ray cluster's ports beyond a "
                       "trusted network: anyone who reaches them can run code on it")
    group.add_argument("--max-unit-retries", type=int, default=DEFAULT_UNIT_RETRIES,
                       help="with --executor ray, re-run a unit whose worker process or node died up to N "
                       "times; a unit that raises is not retried")
    group.add_argument("--rank", type=int, default=0, help="this job's slice of the units (Slurm arrays etc.)")
    group.add_argument("--world-size", type=int, default=1, help="how many slices the units are split into")
    group.add_argument("--no-progress", action="store_true", help="no progress bar")


def executor_options(args) -> dict:
    """The keyword arguments of ``run_stage`` given by ``add_executor_args``' flags:
    ``run_stage(stage, out, **executor_options(args))``."""
    return {"executor": args.executor, "workers": args.workers, "rank": args.rank,
            "world_size": args.world_size, "progress": not args.no_progress,
            "ray_address": args.ray_address, "max_unit_retries": args.max_unit_retries}

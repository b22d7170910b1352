"""The versions a run was made with: the toolkit's and those of the libraries that shape its output.

Read from the installed distributions' metadata, so nothing heavy (torch, yt-dlp) is imported
to report them. Every CLI prints them with ``--version``; ``config.json`` of every stage and
each feature ``meta.json`` record them.
"""
from __future__ import annotations

import argparse
import functools
from importlib import metadata

TOOLKIT = "multi-howto100m"
LIBRARIES = ("yt-dlp", "webvtt-py", "webdataset", "pyarrow", "torch", "torchvision", "decord", "av",
             "transformers")


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=None)
def _all() -> tuple:
    found = {TOOLKIT: _version(TOOLKIT) or "unknown"}
    found.update({name: v for name in LIBRARIES if (v := _version(name)) is not None})
    return tuple(found.items())


def versions(*libraries: str) -> dict:
    """``{"multi-howto100m": "0.1.0", "yt-dlp": ..., ...}`` (only ``libraries`` beside the toolkit
    when given); libraries not installed are left out."""
    return {k: v for k, v in _all() if not libraries or k == TOOLKIT or k in libraries}


def version_line(prog: str) -> str:
    v = dict(versions())
    own = v.pop(TOOLKIT)
    return f"{prog} ({TOOLKIT}) {own}; " + ", ".join(f"{k} {x}" for k, x in v.items())


class _Version(argparse.Action):
    """``--version`` as one unwrapped line on stdout."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_line(parser.prog))
        parser.exit()


def add_version_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", action=_Version,
                        help="print the toolkit's version and those of the libraries it uses, and exit")

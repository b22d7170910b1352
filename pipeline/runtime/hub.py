"""Loading a transformers text model's tokenizer by hub name or ``save_pretrained`` directory, the one
path both ``--text-model`` (mmp-train, mmp-eval) and mmp-stats' ``--tokenizer`` take, with one clear
error for a name that cannot work. transformers is imported only when a tokenizer is loaded.
"""
from __future__ import annotations

import os

from shards.errors import UserError


class TextModelError(UserError):
    """A --text-model that cannot be loaded, or layer settings it cannot satisfy."""


def _looks_local(name: str) -> bool:
    """A path rather than a hub id ("org/model" has one slash and no leading ./ / ~)."""
    return name.startswith((".", "/", "~")) or name.count("/") >= 2 or os.path.exists(os.path.expanduser(name))


def check_text_model(name: str) -> None:
    """One clear error for a local directory that is missing or holds no model config."""
    path = os.path.expanduser(name)
    if os.path.isdir(path):
        if not os.path.exists(os.path.join(path, "config.json")):
            raise TextModelError(f"--text-model {name} is a directory without config.json; "
                                 "give a directory written by save_pretrained or a hub name")
        return
    if _looks_local(name):
        what = "a file" if os.path.exists(path) else "no such directory"
        raise TextModelError(f"--text-model {name} is not a model directory ({what}); "
                             "give a directory written by save_pretrained or a hub name")


def load_tokenizer(name: str):
    """The tokenizer of a hub name or a save_pretrained directory (``TextModelError`` when it cannot load)."""
    from transformers import AutoTokenizer

    check_text_model(name)
    try:
        return AutoTokenizer.from_pretrained(os.path.expanduser(name))
    except (OSError, ValueError) as exc:
        raise TextModelError(f"--text-model {name}: cannot load its tokenizer ({str(exc).splitlines()[0]})") from exc

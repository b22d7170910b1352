"""Load the public backbone checkpoints safely and strictly, or build random ones for smoke runs.

A checkpoint is read with `torch.load(weights_only=True)` (never unpickled as Python
objects), unwrapped from the layouts the real files and common training scripts use,
trimmed of parts we do not run (S3D's text branch), and then loaded strictly: a missing,
unexpected or mis-shaped key is one `WeightsError` that names the file and a few keys, so
a wrong or truncated file can never silently give wrong features. The file's sha256 goes
into meta.json so every shard says which weights made it.
"""

from __future__ import annotations

import hashlib
import logging
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from shards.errors import UserError

from features.r2plus1d import IG65M_NUM_CLASSES, build_r2plus1d_34, num_classes_in
from features.s3d import build_s3dg
from shards.feature_spec import get_spec

# Containers seen around state dicts: training checkpoints ({"state_dict": ...},
# {"model": ...}) and hub-style wrappers. Searched in this order.
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network")
# Prefixes that wrap every key: nn.DataParallel/DDP ("module."), torch.compile
# ("_orig_mod."), and wrappers holding the backbone as `.model` (e.g. the IG65M port's
# extraction wrapper).
_KEY_PREFIXES = ("module.", "_orig_mod.", "model.")
# Parts of a checkpoint that are not in our modules, by backbone family.
_IGNORED_PREFIXES = {"r2plus1d_34": (), "s3dg": ("text_module.",)}
# BatchNorm's step counter: unused in eval mode, present or absent depending on the torch
# version that saved the file.
_OPTIONAL_SUFFIX = "num_batches_tracked"
_EXAMPLES = 4  # keys named per error list

log = logging.getLogger(__name__)


class WeightsError(UserError, ValueError):
    """A weights file that cannot be used for the requested backbone (user-fixable)."""


def _family(name: str) -> str:
    # Every recipe of a backbone runs the same architecture; an r21d weights file says clip8 or clip32.
    return get_spec(name).family


# The architecture of each family, built with the head size its weights file has (R(2+1)D's
# IG65M pre-training head; S3D's fc is separate, see --s3d-output).
_BUILDERS = {"r2plus1d_34": lambda num_classes: build_r2plus1d_34(num_classes=num_classes or 359),
             "s3dg": lambda num_classes: build_s3dg()}


def _build(name: str, num_classes: int | None = None) -> nn.Module:
    return _BUILDERS[_family(name)](num_classes)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_checkpoint(path: Path, name: str) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message advises weights_only=False; we quote only what it refused.
        text = str(exc)
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if found:
            # A reference to a Python class or function, e.g. a pickled nn.Module: loading
            # it would run code from the file, so weights_only refuses it, and so do we.
            raise WeightsError(
                f"{name} weights {path} hold pickled Python objects, which are never loaded "
                f"(torch.load weights_only=True refused {found.group(1)}); "
                "save and pass model.state_dict() instead"
            ) from None
        detail = text.split("WeightsUnpickler error:", 1)[-1].strip().splitlines()
        reason = detail[0] if detail and "WeightsUnpickler error:" in text else type(exc).__name__
        raise WeightsError(f"{name} weights {path} are not a readable PyTorch checkpoint ({reason})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise WeightsError(f"{name} weights {path} are not a readable PyTorch checkpoint: {exc}") from None


def _is_state_dict(obj: object) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def unwrap_state_dict(obj: object, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The tensor dict inside a checkpoint: unwrap known containers and whole-key prefixes."""
    for _ in range(len(_WRAPPER_KEYS) + 1):
        if _is_state_dict(obj):
            break
        if not isinstance(obj, Mapping):
            raise WeightsError(f"{source} holds a {type(obj).__name__}, not a state dict of tensors")
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            top = ", ".join(sorted(map(str, obj))[:_EXAMPLES]) or "nothing"
            raise WeightsError(f"{source} has no state dict of tensors (top-level keys: {top})")
        obj = inner
    else:
        raise WeightsError(f"{source} nests state dicts too deeply to unwrap")
    state = {str(k): v for k, v in obj.items()}
    stripped = True
    while stripped:
        stripped = False
        for prefix in _KEY_PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                stripped = True
    return state


def _examples(keys: list) -> str:
    # Callers pass keys in model or file order, so the first ones named are the earliest
    # layers (stem/conv1), which tell a wrong file from a truncated one at a glance.
    more = f", ... ({len(keys)} in all)" if len(keys) > _EXAMPLES else ""
    return ", ".join(keys[:_EXAMPLES]) + more


def _match_keys(model: nn.Module, state: dict[str, torch.Tensor], name: str, path: Path) -> dict:
    """Check names and shapes against the model; return a dict load_state_dict takes strictly."""
    expected = model.state_dict()
    optional = {k for k in expected if k.endswith(_OPTIONAL_SUFFIX)}
    missing = [k for k in expected if k not in state and k not in optional]
    unexpected = [k for k in state if k not in expected]
    mis_shaped = [
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} key(s): {_examples(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} key(s): {_examples(unexpected)}")
    if mis_shaped:
        problems.append(f"{len(mis_shaped)} key(s) of the wrong shape (file vs model): {_examples(mis_shaped)}")
    if problems:
        arch = get_spec(name).architecture
        raise WeightsError(
            f"{name} weights {path} do not match {arch}: " + "; ".join(problems)
            + f". Pass the {name} checkpoint (e.g. --weights {name}=PATH) unmodified."
        )
    # Fill the optional counters from the model so the strict load below sees every key.
    return {**{k: expected[k] for k in optional if k not in state}, **state}


def load_backbone(name: str, path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, str]:
    """Build backbone `name` ("r21d" or "s3d") with the weights in `path`.

    Returns (model in eval mode on `device`, without gradients; sha256 of the file).
    Raises WeightsError when the file is missing, unsafe, unreadable or does not fit.
    """
    family = _family(name)
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{name} weights file {path} does not exist; pass --weights {name}=PATH to a real file")
    sha256 = file_sha256(path)
    state = unwrap_state_dict(_read_checkpoint(path, name), source=f"{name} weights {path}")
    ignored = _IGNORED_PREFIXES[family]
    state = {k: v for k, v in state.items() if not k.startswith(ignored)} if ignored else state
    # The IG65M files differ in their pretraining head (359 or 487 classes); size ours to it.
    num_classes = num_classes_in(state) if family == "r2plus1d_34" else None
    if num_classes is not None and num_classes not in IG65M_NUM_CLASSES:
        # Loads (features stop before fc) but is not an IG65M pre-training file, e.g. a
        # Kinetics fine-tune (400): worth one line, since features then differ.
        log.warning("%s weights %s have a %d-class head, not IG65M's %s", name, path, num_classes, IG65M_NUM_CLASSES)
    model = _build(name, num_classes=num_classes)
    model.load_state_dict(_match_keys(model, state, name, path), strict=True)
    return _ready(model, device), sha256


def random_backbone(name: str, seed: int = 0, device: str | torch.device = "cpu") -> nn.Module:
    """A randomly initialised backbone for `--random-weights` smoke runs and benchmarks.

    Seeded without disturbing the caller's global RNG, so the same seed gives the same
    model (and features) in every worker.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _build(name)
        if _family(name) == "s3dg":
            # With PyTorch's default init S3D's ~20 gated layers shrink the rows to ~1e-9, below
            # float16 (s3d.npy would be all zeros and hide any row-order bug); He init keeps ~1e-3.
            for module in model.modules():
                if isinstance(module, nn.Conv3d):
                    nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    return _ready(model, device)


def _ready(model: nn.Module, device: str | torch.device) -> nn.Module:
    # Features are always computed in eval mode (BatchNorm running stats) and need no grads.
    model.eval()
    model.requires_grad_(False)
    return model.to(device)

"""Proxy checkpoints without pickle: tensors in ``.npz`` (loaded with ``allow_pickle=False``), the rest JSON.

Layout of ``<run_dir>/checkpoints/``::

    step_00000050/model.npz        parameters by name
    step_00000050/optimizer.npz    AdamW state: state/<param index>/<key>
    step_00000050/rng.npz          torch (and CUDA) RNG states
    step_00000050/state.json       step, consumed samples, tokens, optimizer param groups
    latest                         the name of the newest complete checkpoint folder

A checkpoint folder is written under a temporary name and renamed, and ``latest`` is replaced atomically,
so a crash mid-save leaves the previous checkpoint usable.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from regmix_plugin.errors import RegmixError
from regmix_plugin.io import atomic_write_json, atomic_write_text

LATEST = "latest"


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu").contiguous().numpy()


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def save(ckpt_root: str | os.PathLike, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
         state: dict[str, Any], keep: int = 1) -> Path:
    root = Path(ckpt_root)
    root.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:08d}"
    tmp = root / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    _save_npz(tmp / "model.npz", {k: _to_numpy(v) for k, v in model.state_dict().items() if v is not None})
    opt = optimizer.state_dict()
    arrays = {}
    for idx, pstate in opt["state"].items():
        for key, value in pstate.items():
            arrays[f"state/{idx}/{key}"] = _to_numpy(value) if torch.is_tensor(value) else np.asarray(value)
    _save_npz(tmp / "optimizer.npz", arrays)
    rng = {"torch": _to_numpy(torch.get_rng_state())}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = _to_numpy(torch.cuda.get_rng_state())
    _save_npz(tmp / "rng.npz", rng)
    atomic_write_json(tmp / "state.json", dict(state, step=step, param_groups=opt["param_groups"]))
    final = root / name
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    atomic_write_text(root / LATEST, name + "\n")
    for old in sorted(p for p in root.glob("step_*") if p.is_dir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def find(path: str | os.PathLike) -> Path | None:
    """A checkpoint folder: ``path`` itself, or the one its ``latest`` file (or a run's checkpoints/) names."""
    path = Path(path)
    for root in (path, path / "checkpoints"):
        if (root / "model.npz").is_file():
            return root
        latest = root / LATEST
        if latest.is_file():
            return root / latest.read_text().strip()
    return None


def load_model(ckpt: Path, model: torch.nn.Module) -> None:
    arrays = _load_npz(ckpt / "model.npz")
    own = model.state_dict()
    missing = sorted(k for k, v in own.items() if v is not None and k not in arrays)
    if missing:
        raise RegmixError(f"--init-from: {ckpt} lacks {missing[0]}; the checkpoint is from a different model config")
    for key, value in arrays.items():
        if key in own and tuple(own[key].shape) != value.shape:
            raise RegmixError(
                f"--init-from: {ckpt}: {key} has shape {value.shape}, the model expects {tuple(own[key].shape)}; "
                "use the model config the checkpoint was trained with"
            )
    model.load_state_dict({k: torch.from_numpy(v) for k, v in arrays.items() if k in own}, strict=False)


def load_training_state(ckpt: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore model, optimizer and RNG; returns state.json (step, consumed samples, ...)."""
    load_model(ckpt, model)
    state = json.loads((ckpt / "state.json").read_text())
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in _load_npz(ckpt / "optimizer.npz").items():
        _, idx, name = key.split("/", 2)
        opt_state.setdefault(int(idx), {})[name] = torch.from_numpy(value)
    optimizer.load_state_dict({"state": opt_state, "param_groups": state.pop("param_groups")})
    rng = _load_npz(ckpt / "rng.npz")
    torch.set_rng_state(torch.from_numpy(rng["torch"]))
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(torch.from_numpy(rng["cuda"]))
    return state

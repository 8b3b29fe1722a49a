"""What a model checkpoint holds beyond Lightning's own keys: slim state dicts without frozen backbone weights,
the bridge's extra entries, and the export of the domain model alone (``python -m lightning_bridge.serving.export``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch

from lightning_bridge.modules.info_sharing import fold_text_channel
from lightning_bridge.run.checkpoints import read_checkpoint
from lightning_bridge.run.fingerprint import KEY as FINGERPRINT_KEY

# A BridgeModule checkpoint's extra entries: the domain model's own hyperparameters (so that export needs no
# LM), and the text anchor's and text channel's state (so that a resumed run replays the same anchor and
# keeps the features encoded at its epoch's start).
DOMAIN_HPARAMS_KEY = "domain_hyper_parameters"
TEXT_ANCHOR_KEY = "text_anchor"
TEXT_CHANNEL_EPOCH_KEY = "text_channel_epoch"
WARM_STARTED_FROM_KEY = "warm_started_from"  # [path, best validation] of the warm start
# the class of a domain model whose checkpoint does not name it (written before the bridge recorded it)
DOMAIN_CLASS_PATH = "lightning_bridge.models.domain.DomainModule"

# init arguments a model checkpoint does not record: objects, and knobs the caller's config always decides
NOT_HYPERPARAMETERS = ("info_sharing", "optimizer", "scheduler", "predict_top_k")

def save_own_hyperparameters(module: L.LightningModule, arguments: dict[str, Any]) -> None:
    """Records a DomainModule's or LMModule's init ``arguments`` (``locals()`` on entering ``__init__``).

    Alone, the module lets Lightning record them (under LightningCLI: the config, with the class path that
    loading needs). Given shared tables it is a BridgeModule's child, built while Lightning holds the bridge's
    config as the one to record, so it records its own arguments explicitly.
    """
    if arguments.get("info_sharing") is None:
        module.save_hyperparameters(ignore=list(NOT_HYPERPARAMETERS))
    else:
        module.save_hyperparameters({k: v for k, v in arguments.items()
                                     if k not in ("self", "__class__", *NOT_HYPERPARAMETERS)})


def frozen_parameter_names(module: torch.nn.Module) -> set[str]:
    """State-dict names of the parameters nothing trains: frozen backbone weights, reloaded from source."""
    return {name for name, p in module.named_parameters(remove_duplicate=False) if not p.requires_grad}


def slim_state_dict(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` without the frozen parameters of ``module`` (any module holding an LMModule)."""
    frozen = frozen_parameter_names(module)
    return {k: v for k, v in state.items() if k not in frozen}


def complete_slim_state_dict(module: torch.nn.Module, state: dict[str, Any]) -> None:
    """Fills a slim ``state`` (in place) with ``module``'s own frozen weights, so that a strict
    ``load_state_dict`` follows; raises first, naming the keys, if anything else is missing or unknown."""
    own = module.state_dict()
    frozen = frozen_parameter_names(module)
    missing = sorted(set(own) - frozen - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise RuntimeError(f"the checkpoint does not fit {type(module).__name__}: "
                           f"missing keys {missing[:10]}{' ...' if len(missing) > 10 else ''}, "
                           f"unexpected keys {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}. "
                           "Load it with the config it was trained with (its run folder's config.yaml).")
    state.update({k: v for k, v in own.items() if k in frozen and k not in state})


def export_domain(bridge_checkpoint: str | Path, out: str | Path) -> Path:
    """Writes ``out`` holding the DomainModule's weights (including the shared tables) and hyperparameters."""
    ckpt = read_checkpoint(bridge_checkpoint)  # weights_only: a crafted file runs no code
    if DOMAIN_HPARAMS_KEY not in ckpt:
        raise ValueError(f"{bridge_checkpoint}: not a BridgeModule checkpoint (no {DOMAIN_HPARAMS_KEY!r})")
    state = {k.removeprefix("domain."): v for k, v in ckpt["state_dict"].items() if k.startswith("domain.")}
    state = fold_text_channel(state, "recommender.info.")  # a DomainModule has no text channel of its own
    exported = {
        "state_dict": state,
        "hyper_parameters": {"_class_path": DOMAIN_CLASS_PATH, **ckpt[DOMAIN_HPARAMS_KEY]},
        "pytorch-lightning_version": ckpt["pytorch-lightning_version"],
        "epoch": ckpt.get("epoch", 0),
        "global_step": ckpt.get("global_step", 0),
        **{k: ckpt[k] for k in (FINGERPRINT_KEY,) if k in ckpt},
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(exported, out)
    return out

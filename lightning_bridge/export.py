"""Export the domain half of a co-training checkpoint as a DomainModule checkpoint.

    python -m lightning_bridge.export logs/<run>/checkpoints/last.ckpt domain.ckpt

The result loads with ``DomainModule.load_from_checkpoint`` or ``main.py predict --ckpt_path domain.ckpt``
and serves recommendations without building, or even installing the weights of, the language model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from lightning_bridge.checkpoints import read_checkpoint
from lightning_bridge.fingerprint import KEY as FINGERPRINT_KEY

DOMAIN_CLASS_PATH = "lightning_bridge.models.domain.DomainModule"


def export_domain(bridge_checkpoint: str | Path, out: str | Path) -> Path:
    """Writes ``out`` holding the DomainModule's weights (including the shared tables) and hyperparameters."""
    ckpt = read_checkpoint(bridge_checkpoint)  # weights_only: a crafted file runs no code
    if "domain_hyper_parameters" not in ckpt:
        raise ValueError(f"{bridge_checkpoint}: not a BridgeModule checkpoint (no 'domain_hyper_parameters')")
    state = {k.removeprefix("domain."): v for k, v in ckpt["state_dict"].items() if k.startswith("domain.")}
    exported = {
        "state_dict": state,
        "hyper_parameters": {"_class_path": DOMAIN_CLASS_PATH, **ckpt["domain_hyper_parameters"]},
        "pytorch-lightning_version": ckpt["pytorch-lightning_version"],
        "epoch": ckpt.get("epoch", 0),
        "global_step": ckpt.get("global_step", 0),
        **{k: ckpt[k] for k in (FINGERPRINT_KEY,) if k in ckpt},
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(exported, out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bridge_checkpoint")
    parser.add_argument("out")
    args = parser.parse_args(argv)
    print(export_domain(args.bridge_checkpoint, args.out))


if __name__ == "__main__":
    main()

"""Export the domain half of a co-training checkpoint as a DomainModule checkpoint.

    python -m lightning_bridge.export logs/<run>/checkpoints/last.ckpt domain.ckpt

The result loads with ``DomainModule.load_from_checkpoint`` or ``main.py predict --ckpt_path domain.ckpt``
and serves recommendations without building, or even installing the weights of, the language model. The
export itself is ``lightning_bridge.models.checkpoints.export_domain``.
"""

from __future__ import annotations

import argparse

from lightning_bridge.models.checkpoints import export_domain


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bridge_checkpoint")
    parser.add_argument("out")
    args = parser.parse_args(argv)
    print(export_domain(args.bridge_checkpoint, args.out))


if __name__ == "__main__":
    main()

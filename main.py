"""Entry point: ``python main.py fit --config configs/ml100k.yaml`` (see README)."""

from lightning_bridge.cli import main

if __name__ == "__main__":
    main()

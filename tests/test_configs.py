"""The shipped configs beyond ML-100K: they parse, say what to do without GroupLens, and run on their data."""

import random
from pathlib import Path

import pytest

from lightning_bridge.cli import main
from lightning_bridge.data import download
from lightning_bridge.data.datasets import MovieLensDataModule
from lightning_bridge.data.download import DatasetUnavailableError

CONFIGS = Path(__file__).parent.parent / "configs"


@pytest.mark.parametrize("names", [["ml1m.yaml"], ["ml1m_lightgcn.yaml"], ["examples/atomic_amazon_books.yaml"],
                                   ["ml100k.yaml", "variants/text_teacher.yaml", "variants/new_items.yaml"],
                                   *([name] for name in ("ml100k_lightgcn.yaml", "ml100k_lm.yaml", "ml100k_ncf.yaml",
                                                         "ml100k_sasrec.yaml", "ml100k_bdlm_ncf.yaml",
                                                         "ml100k_bdlm_sasrec.yaml", "examples/ml100k_smollm2.yaml",
                                                         "examples/ml100k_smollm2_lm.yaml",
                                                         "examples/ml100k_qwen2.5-0.5b.yaml",
                                                         "examples/ml100k_vicuna-7b.yaml"))],
                         ids="+".join)
def test_config_parses(names, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", *(arg for name in names for arg in ("--config", str(CONFIGS / name))), "--print_config"])
    assert exit_.value.code in (None, 0)
    printed = capsys.readouterr().out
    assert "class_path: lightning_bridge.data.datasets." in printed


def test_ml1m_without_grouplens_names_data_dir(in_tmp, monkeypatch):
    def unreachable(url: str) -> bytes:
        raise DatasetUnavailableError("Network is unreachable")

    monkeypatch.setattr(download, "_fetch", unreachable)
    data = MovieLensDataModule(variant="ml-1m", cache_dir=str(in_tmp / "cache"))
    with pytest.raises(DatasetUnavailableError) as err:
        _ = data.interactions
    message = str(err.value)
    assert "ml-1m.zip" in message and "Network is unreachable" in message
    assert "data.init_args.data_dir" in message


def write_amazon_style(folder: Path, users: int = 30, items: int = 20) -> None:
    """A tiny Amazon-style atomic folder: ratings with timestamps, items with titles and categories."""
    rng = random.Random(0)
    folder.mkdir(parents=True)
    rows = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    for u in range(users):
        for i in rng.sample(range(items), 6):
            rows.append(f"A{u:04d}\tB{i:05d}\t{rng.randint(1, 5)}.0\t{1_300_000_000 + rng.randint(0, 10**6)}")
    (folder / f"{folder.name}.inter").write_text("\n".join(rows) + "\n")
    items_rows = ["item_id:token\ttitle:token_seq\tcategories:token_seq\tbrand:token"]
    items_rows += [f"B{i:05d}\tBook number {i}\tBooks Fiction{i % 3}\tPress{i % 2}" for i in range(items)]
    (folder / f"{folder.name}.item").write_text("\n".join(items_rows) + "\n")


def test_atomic_example_trains_on_an_amazon_style_folder(in_tmp):
    folder = in_tmp / "Amazon_Books"
    write_amazon_style(folder)
    cli = main(["fit", "--config", str(CONFIGS / "examples/atomic_amazon_books.yaml"),
                "--data.init_args.folder", str(folder), "--trainer.max_epochs", "2",
                "--trainer.check_val_every_n_epoch", "1", "--trainer.accelerator", "cpu",
                "--model.init_args.embedding_dim", "8"])
    data = cli.datamodule
    assert (data.num_users, data.num_items) == (30, 20)
    item = list(data.interactions.item_ids).index("B00007")
    assert data.item_title(item) == "Book number 7"
    assert "categories: Books Fiction1" in data.item_text[item]
    assert 0.0 <= float(cli.trainer.callback_metrics["domain/val/ndcg@10"]) <= 1.0

"""Amazon Reviews in its 2014, 2018 and 2023 formats (hand-made files in tests/data/amazon), 5-core by default."""

import gzip
import json
from pathlib import Path

import pytest
import yaml

from lightning_bridge.cli import main
from lightning_bridge.data.amazon import read_amazon
from lightning_bridge.data.datasets import AmazonReviewsDataModule
from lightning_bridge.data.tables import DataFormatError

FILES = Path(__file__).parent / "data" / "amazon"
ROOT = Path(__file__).parent.parent
RELEASES = {"2014": ("reviews_Beauty_5_2014.json", "meta_Beauty_2014.json"),  # metadata as Python literals
            "2018": ("Beauty_5.json", "meta_Beauty.json.gz"),
            "2023": ("All_Beauty.jsonl.gz", "meta_All_Beauty.jsonl")}


def _data(release: str, **options) -> AmazonReviewsDataModule:
    reviews, metadata = RELEASES[release]
    return AmazonReviewsDataModule(str(FILES / reviews), str(FILES / metadata), **options)


@pytest.mark.parametrize("release", sorted(RELEASES))
def test_five_core_by_default_iterated_to_a_fixed_point(release):
    # 7 reviewers, 7 products, 38 reviews: A7 (2 reviews) and the 7th product (2 reviewers) fall out, which
    # leaves A6 with 4; one repeated review is dropped; the five reviewers of all six products remain
    data = _data(release)
    assert (data.num_users, data.num_items, len(data.interactions.users)) == (5, 6, 30)
    everything = _data(release, min_user_interactions=0, min_item_interactions=0)
    assert (everything.num_users, everything.num_items, len(everything.interactions.users)) == (7, 7, 37)


def test_2018_item_text_is_the_title_and_chosen_fields():
    data = _data("2018")
    text = dict(zip(data.interactions.item_ids, data.interactions.item_text, strict=True))
    assert text["B00004TMFE"] == "Rosewater Facial Toner, 8 oz; categories: Beauty, Skin Care, Face"
    assert data.item_title(list(data.interactions.item_ids).index("B000FI4S1E")) == "Matte Lipstick, Ruby Red"
    chosen = _data("2018", item_text_fields=("brand", "description", "features"))
    text = dict(zip(chosen.interactions.item_ids, chosen.interactions.item_text, strict=True))
    assert text["B00004TMFE"] == ("Rosewater Facial Toner, 8 oz; brand: Rosa; description: Rosewater Facial "
                                  "Toner, 8 oz. Dermatologist tested.; features: Paraben free, Cruelty free")
    assert text["B0009RF9DW"] == "Argan Oil Shampoo; brand: Argania"  # empty fields are left out
    titles_only = _data("2018", item_text_fields=())
    assert titles_only.interactions.item_text[0] == "Rosewater Facial Toner, 8 oz"
    features = chosen.interactions.item_features  # what the RecBole export writes beside the text
    assert features.types == dict.fromkeys(("title", "brand", "description", "features"), "token_seq")
    assert features.values["B0009RF9DW"] == ["Argan Oil Shampoo", "Argania", "", ""]


def test_2023_items_are_parent_asins_and_2014_lists_of_paths_are_flattened():
    data = _data("2023")
    assert list(data.interactions.item_ids) == ["B07J3GH1W1", "B07PNNCSP9", "B086QY6T7N", "B08BBQ29N5",
                                                "B08P2DZB4X", "B09JS339BZ"]
    assert data.interactions.item_text[0] == "Rosewater Facial Toner, 8 oz; categories: Skin Care, Face"
    old = _data("2014")
    assert old.interactions.item_text[0] == "Rosewater Facial Toner, 8 oz; categories: Beauty, Skin Care, Face"
    untitled = list(old.interactions.item_ids).index("B000GLRREU")
    assert old.item_title(untitled) == "B000GLRREU"  # a 2014 product without a title is shown by its id


def test_leave_one_out_by_review_time_not_file_order():
    reviews = [json.loads(line) for line in (FILES / "Beauty_5.json").read_text().splitlines()]
    mine = sorted((r["unixReviewTime"], r["asin"]) for r in reviews if r["reviewerID"] == "A1QZ6XRL4K2KPM")
    # A1's reviews in time: ..., B00006L9LC, then B00004TMFE again (a repeat, dropped: the first one counts)
    assert [asin for _, asin in mine[-2:]] == ["B00006L9LC", "B00004TMFE"]
    data = _data("2018")
    inter = data.interactions
    tested = {inter.user_ids[inter.users[r]]: inter.item_ids[inter.items[r]] for r in data.split.test}
    assert tested["A1QZ6XRL4K2KPM"] == "B00006L9LC"


def test_the_shipped_configs_state_the_reference_and_train_on_the_files(in_tmp):
    for name, figure in (("beauty", "0.0318"), ("sports", "0.0192"), ("toys", "0.0374")):
        config = ROOT / "configs" / f"amazon_{name}.yaml"
        assert f"SASRec test NDCG@10 {figure}" in config.read_text()
        assert yaml.safe_load(config.read_text())["data"]["class_path"].endswith("AmazonReviewsDataModule")
    cli = main(["fit", "--config", str(ROOT / "configs" / "amazon_beauty.yaml"), "--trainer.max_epochs", "1",
                "--trainer.accelerator", "cpu", "--data.init_args.reviews_path", str(FILES / "Beauty_5.json"),
                "--data.init_args.metadata_path", str(FILES / "meta_Beauty.json.gz"), "--export_after_fit", "false"])
    assert (cli.datamodule.num_users, cli.datamodule.num_items) == (5, 6)
    assert cli.trainer.global_step == 1


def test_broken_files_are_named_with_their_line(tmp_path):
    lines = (FILES / "Beauty_5.json").read_text().splitlines()
    truncated = tmp_path / "Beauty_5.json.gz"
    with gzip.open(truncated, "wt") as f:
        f.write("\n".join(lines[:3]) + "\n" + lines[3][:40] + "\n")
    with pytest.raises(DataFormatError, match=r"Beauty_5\.json\.gz, line 4: expected a JSON object on every line"):
        read_amazon(truncated)
    foreign = tmp_path / "reviews.json"
    foreign.write_text(lines[0] + "\n" + json.dumps({"reviewerID": "A1", "asin": "B1", "unixReviewTime": 5}) + "\n")
    with pytest.raises(DataFormatError, match=r"reviews\.json, line 2: expected the review's rating as 'overall'"):
        read_amazon(foreign)
    cut = tmp_path / "cut.json.gz"
    cut.write_bytes((FILES / "meta_Beauty.json.gz").read_bytes()[:300])
    with pytest.raises(DataFormatError, match=r"cut\.json\.gz: cannot be read as gzipped UTF-8 text"):
        read_amazon(FILES / "Beauty_5.json", cut)
    meta = tmp_path / "meta.json"
    meta.write_text("{'asin': 'B00004TMFE', 'title': 'Toner'\n")
    with pytest.raises(DataFormatError, match=r"meta\.json, line 1: expected a JSON object or a Python dict literal"):
        read_amazon(FILES / "Beauty_5.json", meta)

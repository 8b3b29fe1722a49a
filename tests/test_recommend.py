"""recommend(): titles beside ids and scores, several new users per call, a domain-only export without LM libraries."""

import subprocess
import sys

import pytest
from conftest import CONFIGS, fit_in_own_folder

import lightning_bridge
from lightning_bridge import load_recommender


@pytest.fixture(scope="module")
def domain_run(tmp_path_factory):
    return fit_in_own_folder(tmp_path_factory, "domain", ["--config", str(CONFIGS / "tiny_domain.yaml"),
                                                          "--trainer.max_epochs", "1"])


def test_recommendations_carry_titles(domain_run):
    cli, _ = domain_run
    rec = load_recommender(cli.exported)
    (top,) = rec.recommend(user_ids=[rec.user_ids[0]], k=5)
    data = cli.datamodule
    titles = {data.raw_item_id(i): data.item_title(i) for i in range(data.num_items)}
    assert len(top.titles) == len(top.items) == 5
    assert top.titles == [titles[item] for item in top.items] and all(t.startswith("item ") for t in top.titles)


def test_several_new_users_in_one_call(domain_run):
    rec = load_recommender(domain_run[0].exported)
    histories = {"ann": ["3", "7"], "bob": ["1", "2", "5"]}
    together = rec.recommend(user_ids=[rec.user_ids[1]], histories=histories, k=4)
    assert [r.user for r in together] == [rec.user_ids[1], "ann", "bob"]
    for label, items in histories.items():
        (alone,) = rec.recommend(history=items, k=4)
        (mine,) = [r for r in together if r.user == label]
        assert mine.items == alone.items and mine.scores == pytest.approx(alone.scores, rel=1e-6)  # batch of 2
        assert not set(mine.items) & set(items)  # their own items are not offered back
    assert rec.scores(histories=histories).shape == (2, len(rec.item_ids))


def test_a_domain_only_export_loads_without_transformers_or_peft(domain_run):
    code = ("import sys; from lightning_bridge import load_recommender; "
            f"rec = load_recommender({str(domain_run[0].exported)!r}); rec.recommend(history=['3'], k=2); "
            "print(sorted(m for m in ('transformers', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_package_states_its_version():
    from importlib.metadata import version

    assert lightning_bridge.__version__ == version("lightning_bridge")

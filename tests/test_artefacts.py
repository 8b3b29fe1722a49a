"""The export folder, load_recommender, and predict for chosen and new users: what a user does with a run."""

import csv
import json
import os

import pytest
import torch
from conftest import CONFIGS, fit_in_own_folder
from peft import PeftConfig

from lightning_bridge import load_recommender
from lightning_bridge.cli import main
from lightning_bridge.data.requests import PredictionRequest
from lightning_bridge.modules.lm.backbone import ID_TOKEN
from lightning_bridge.modules.lm.id_tokens import USER
from lightning_bridge.serving.artefacts import model_from_checkpoint
from lightning_bridge.serving.export import main as export_main

BRIDGE, DOMAIN = str(CONFIGS / "tiny_bridge.yaml"), str(CONFIGS / "tiny_domain.yaml")


@pytest.fixture(scope="module")
def bridge_run(tmp_path_factory):
    """One co-training fit (it exports itself at the end), shared by the tests that only read it."""
    return fit_in_own_folder(tmp_path_factory, "bridge", ["--config", BRIDGE])


def _histories_file(path, rows):
    path.write_text("history\titem ids\n" + "".join(f"{label}\t{' '.join(items)}\n" for label, items in rows))
    return path


def _predictions(path):
    with path.open() as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    out = {}
    for row in rows:
        out.setdefault(row["user_id"], []).append((row["item_id"], row["score"]))
    return out


def test_fit_writes_the_export_folder(bridge_run):
    cli, folder = bridge_run
    export = cli.exported
    assert export == folder / "logs" / "run" / "version_0" / "export"
    for name in ("recommender.json", "id_maps.json", "texts.json", "histories.safetensors",
                 "info_sharing.safetensors", "domain.safetensors", "lm/head.safetensors",
                 "lm/adapter/adapter_config.json", "lm/tokenizer/tokenizer_config.json"):
        assert (export / name).is_file(), name
    spec = json.loads((export / "recommender.json").read_text())
    # each model from its own best checkpoint, as test_after_fit tests them
    assert "best-lm-" in spec["lm"]["checkpoint"] and "best-lm-" not in spec["domain"]["checkpoint"]
    assert spec["lm"]["pooling"] == "last" and spec["domain"]["encoder"] == "lightgcn"
    # peft reads the adapter on its own, and it names the backbone as the user gave it, not a local path
    assert PeftConfig.from_pretrained(str(export / "lm" / "adapter")).base_model_name_or_path == "tiny-decoder"
    tokenizer = json.loads((export / "lm" / "tokenizer" / "tokenizer.json").read_text())
    assert any(token["content"] == ID_TOKEN for token in tokenizer["added_tokens"])
    ids = json.loads((export / "id_maps.json").read_text())
    assert ids["users"] == [str(u) for u in cli.datamodule.interactions.user_ids]


@pytest.mark.parametrize("side", ["domain", "lm"])
def test_loader_scores_equal_the_checkpoints(bridge_run, side):
    cli, _ = bridge_run
    spec = json.loads((cli.exported / "recommender.json").read_text())
    model = model_from_checkpoint(str(cli.exported.parent / spec[side]["checkpoint"]))  # relative to the run
    recommender = getattr(model, side).recommender
    data = cli.datamodule
    users = [data.raw_user_id(u) for u in (0, 3, 7)]
    data.request_predictions(PredictionRequest(users=users))
    batch = next(iter(data.predict_dataloader()))
    recommender.attach(data)
    with torch.no_grad():
        expected = recommender.scores(batch)
    data.request_predictions(None)
    loaded = load_recommender(cli.exported)
    assert torch.equal(loaded.scores(user_ids=users, model=side), expected)


@pytest.mark.parametrize("side", ["domain", "lm"])
def test_predict_for_chosen_and_new_users_matches_the_loader(bridge_run, side):
    cli, folder = bridge_run
    data, run = cli.datamodule, cli.exported.parent
    users = [data.raw_user_id(u) for u in (1, 2)]
    new = [data.raw_item_id(i) for i in (4, 9, 5)]
    histories = _histories_file(folder / f"histories_{side}.tsv", [("newcomer", new)])
    out = folder / f"predictions_{side}.tsv"
    main(["predict", "--config", str(run / "config.yaml"), "--ckpt_path", str(run / json.loads(
        (cli.exported / "recommender.json").read_text())[side]["checkpoint"]),
        "--predict_for.users", f"[{', '.join(users)}]", "--predict_for.histories", str(histories),
        "--predictions.path", str(out), "--model.init_args.predict_with", side,
        "--model.init_args.domain.init_args.predict_top_k", "5", "--model.init_args.lm.init_args.predict_top_k", "5"])
    written = _predictions(out)
    assert list(written) == [*users, "newcomer"]  # only the requested users, in order
    assert not {item for item, _ in written["newcomer"]} & set(new)  # a new user's own items are not offered

    loaded = load_recommender(cli.exported)
    for rec in [*loaded.recommend(user_ids=users, k=5, model=side), *loaded.recommend(history=new, k=5, model=side)]:
        label = "newcomer" if rec.user == "history" else rec.user
        items, scores = zip(*written[label], strict=True)
        assert list(rec.items) == list(items)
        # the file holds 6 significant digits, and a batch of a different size may round the last one apart
        assert list(rec.scores) == pytest.approx([float(s) for s in scores], rel=1e-5)


def test_a_new_user_is_the_mean_of_their_items_for_the_domain_model(bridge_run):
    loaded = load_recommender(bridge_run[0].exported)
    domain = loaded.models["domain"]
    _, item_vec = domain.encoder(domain.info)
    history = ["3", "7"]
    rows = [loaded.item_ids.index(i) for i in history]
    expected = item_vec[rows].mean(0) @ item_vec.T
    torch.testing.assert_close(loaded.scores(history=history)[0], expected.detach())


def test_a_new_users_prompt_has_no_user_token(bridge_run):
    loaded = load_recommender(bridge_run[0].exported)
    lm = loaded.models["lm"]
    prompts = lm.prompts.build(torch.tensor([-1, 0]), torch.tensor([[1, 2], [1, 2]]))
    has_user_token = (prompts["id_kind"] == USER).any(1)
    assert has_user_token.tolist() == [False, True]


def test_export_command_from_a_domain_checkpoint(in_tmp):
    main(["fit", "--config", DOMAIN, "--export_after_fit", "false"])
    run = in_tmp / "logs" / "run" / "version_0"
    assert not (run / "export").exists()
    export_main(["artefacts", str(run / "checkpoints" / "last.ckpt")])
    loaded = load_recommender(run / "export")
    assert list(loaded.models) == ["domain"]
    known = loaded.recommend(user_ids=["0"], k=50)[0]
    assert len(known.items) == 40 - len(set(loaded._known.items[loaded._known.indptr[0]:loaded._known.indptr[1]]))
    with pytest.raises(ValueError, match="model='lm': this export holds domain"):
        loaded.recommend(user_ids=["0"], model="lm")
    with pytest.raises(ValueError, match="--lm_checkpoint applies to co-training runs"):
        export_main(["artefacts", str(run / "checkpoints" / "last.ckpt"), "--lm_checkpoint", "x.ckpt"])


def test_unknown_and_malformed_requests_are_named(in_tmp):
    main(["fit", "--config", DOMAIN, "--trainer.max_epochs", "1", "--export_after_fit", "false"])
    run = in_tmp / "logs" / "run" / "version_0"
    predict = ["predict", "--config", str(run / "config.yaml"), "--ckpt_path", str(run / "checkpoints" / "last.ckpt")]
    with pytest.raises(ValueError, match=r"predict_for.users: 2 unknown user id\(s\): 'nobody', 'ghost'"):
        main([*predict, "--predict_for.users", "[0, nobody, ghost]"])
    bad_item = _histories_file(in_tmp / "h.tsv", [("carol", ["1", "no-such-item"])])
    with pytest.raises(ValueError, match=r"predict_for.histories \(carol\): 1 unknown item id\(s\): 'no-such-item'"):
        main([*predict, "--predict_for.histories", str(bad_item)])
    (in_tmp / "broken.tsv").write_text("alice\t1 2\nbob has no tab\n")
    with pytest.raises(ValueError, match=r"broken.tsv:2: expected 'label<TAB>item ids'"):
        PredictionRequest(histories=str(in_tmp / "broken.tsv"))
    with pytest.raises(FileNotFoundError, match=r"predict_for.users: 'ids.txt' is neither a list of ids"):
        PredictionRequest(users="ids.txt")
    (in_tmp / "ids.txt").write_text("# chosen users\n0\n\n5\n")
    assert PredictionRequest(users="ids.txt").users == ["0", "5"]


def test_an_lm_only_run_fine_tuned_in_full_exports_its_whole_backbone(in_tmp):
    cli = main(["fit", "--config", str(CONFIGS / "tiny_lm.yaml"), "--model.init_args.finetune", "full"])
    export = cli.exported
    assert (export / "lm" / "backbone" / "config.json").is_file() and not (export / "lm" / "adapter").exists()
    spec = json.loads((export / "recommender.json").read_text())
    assert "domain" not in spec
    model = model_from_checkpoint(str(export.parent / spec["lm"]["checkpoint"]))
    data = cli.datamodule
    users = [data.raw_user_id(u) for u in (0, 5)]
    data.request_predictions(PredictionRequest(users=users))
    batch = next(iter(data.predict_dataloader()))
    model.recommender.attach(data)
    with torch.no_grad():
        expected = model.recommender.scores(batch)
    loaded = load_recommender(export)
    assert list(loaded.models) == ["lm"]
    assert torch.equal(loaded.scores(user_ids=users), expected)
    assert len(loaded.recommend(history=[data.raw_item_id(2)], k=3)[0].items) == 3


def test_both_models_from_one_co_training_checkpoint(bridge_run, tmp_path):
    cli, _ = bridge_run
    last = cli.exported.parent / "checkpoints" / "last.ckpt"
    export_main(["artefacts", str(last), "--out", str(tmp_path / "export")])
    spec = json.loads((tmp_path / "export" / "recommender.json").read_text())
    assert spec["domain"]["checkpoint"] == spec["lm"]["checkpoint"] == os.path.relpath(last.resolve(), tmp_path)
    loaded = load_recommender(tmp_path / "export")
    assert list(loaded.models) == ["domain", "lm"]
    assert torch.equal(loaded.models["domain"].info.item.weight, loaded.models["lm"].info.item.weight)

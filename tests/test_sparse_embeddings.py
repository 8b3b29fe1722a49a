"""sparse_embeddings: MF and NeuMF trained with sparse row gradients and LazyAdam (a step costs O(batch))."""

import lightning as L
import pytest
import torch
from conftest import CONFIGS

from lightning_bridge.cli import main
from lightning_bridge.co_training.bridge import BridgeModule
from lightning_bridge.data.datasets import SyntheticDataModule
from lightning_bridge.models.domain import DomainModule
from lightning_bridge.models.lazy_adam import LazyAdam, lazy_optimizer
from lightning_bridge.models.lm import LMModule

TINY = str(CONFIGS / "tiny_domain.yaml")
SPARSE_MF = ["--model.init_args.encoder", "mf", "--model.init_args.sparse_embeddings", "true"]


def _data() -> SyntheticDataModule:
    data = SyntheticDataModule(num_users=60, num_items=40, batch_size=64)
    data.setup("fit")
    return data


def _module(data, sparse: bool, encoder: str = "mf", lr: float = 0.01) -> DomainModule:
    torch.manual_seed(0)
    module = DomainModule(data.num_users, data.num_items, encoder=encoder, embedding_dim=8,
                          optimizer=lambda p: torch.optim.Adam(p, lr=lr), sparse_embeddings=sparse)
    module.recommender.attach(data)
    return module


def _step(module: DomainModule, batch: dict) -> torch.optim.Optimizer:
    optimizer = module.configure_optimizers()
    optimizer.zero_grad()
    torch.manual_seed(1)  # NeuMF's dropout draws the same masks on both sides
    module.recommender.loss(batch).backward()
    optimizer.step()
    return optimizer


@pytest.mark.parametrize("encoder", ["mf", "ncf"])
def test_first_step_equals_dense_adam_and_touches_only_the_batch_rows(encoder):
    """Dense Adam's first step moves no untouched row (its gradient and moments are zero there), so the lazy
    step must give the very same weights everywhere, NeuMF's dense layers included."""
    data = _data()
    batch = next(iter(data.train_dataloader()))
    dense, sparse = _module(data, False, encoder), _module(data, True, encoder)
    before = sparse.info.item.weight.detach().clone()
    _step(dense, batch)
    optimizer = _step(sparse, batch)
    assert isinstance(optimizer, LazyAdam)
    assert sparse.info.user.weight.grad.is_sparse and sparse.info.item.weight.grad.is_sparse
    for (name, d), s in zip(dense.named_parameters(), sparse.parameters(), strict=True):
        torch.testing.assert_close(s, d, rtol=1e-6, atol=1e-7, msg=name)
    touched = torch.zeros(data.num_items, dtype=torch.bool)
    touched[torch.cat([batch["pos"], batch["neg"]])] = True
    moved = (sparse.info.item.weight.detach() != before).any(1)
    assert torch.equal(moved, touched)


def test_lazy_adam_leaves_rows_and_moments_a_step_does_not_touch():
    table = torch.nn.Embedding(5, 3, sparse=True)
    optimizer = LazyAdam(table.parameters(), lr=0.1)
    table(torch.tensor([0, 2])).sum().backward()
    optimizer.step()
    after_first = table.weight.detach().clone()
    moments = optimizer.state[table.weight]["exp_avg"].clone()
    optimizer.zero_grad()
    table(torch.tensor([1])).sum().backward()
    optimizer.step()
    for row in (0, 2, 3, 4):
        assert torch.equal(table.weight[row], after_first[row])
        assert torch.equal(optimizer.state[table.weight]["exp_avg"][row], moments[row])
    assert not torch.equal(table.weight[1], after_first[1])


def test_mf_with_sparse_embeddings_trains():
    data = _data()
    module = _module(data, True, lr=0.05)
    batch = next(iter(data.train_dataloader()))
    with torch.no_grad():
        before = module.recommender.loss(batch).item()
    trainer = L.Trainer(max_epochs=5, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, datamodule=data)
    with torch.no_grad():
        after = module.recommender.loss(batch).item()
    assert after < 0.8 * before


def test_resume_with_sparse_embeddings_equals_an_uninterrupted_run(in_tmp):
    """LazyAdam's state (per-row moments, step counts) is checkpointed and restored like Adam's."""
    full = main(["fit", "--config", TINY, *SPARSE_MF, "--trainer.max_epochs", "3",
                 "--trainer.logger.init_args.name", "full"])
    assert isinstance(full.trainer.optimizers[0], LazyAdam)
    main(["fit", "--config", TINY, *SPARSE_MF, "--trainer.max_epochs", "3", "--trainer.max_steps", "13",
          "--trainer.logger.init_args.name", "part"])
    run = in_tmp / "logs" / "part" / "version_0"
    resumed = main(["fit", "--config", str(run / "config.yaml"), "--trainer.max_steps", "-1", "--ckpt_path",
                    str(run / "checkpoints" / "last.ckpt")])
    assert resumed.trainer.global_step == full.trainer.global_step == 27
    for name, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name


def test_gradient_clipping_with_sparse_embeddings_is_an_error_naming_both(in_tmp):
    with pytest.raises(ValueError, match=r"trainer.gradient_clip_val=1.0 cannot apply with .*sparse_embeddings=true"):
        main(["fit", "--config", TINY, *SPARSE_MF, "--trainer.gradient_clip_val", "1.0"])


@pytest.mark.parametrize(("encoder", "reason"), [("lightgcn", "propagates over every user and item row"),
                                                 ("sasrec", "scores the whole item table")])
def test_encoders_that_read_every_row_refuse_sparse_embeddings(encoder, reason):
    with pytest.raises(ValueError, match=rf"sparse_embeddings=true applies to encoder mf or ncf.*{reason}"):
        DomainModule(10, 10, encoder=encoder, sparse_embeddings=True)


def test_sparse_embeddings_inside_co_training_is_an_error_saying_why():
    def domain(u, i, **kw):
        return DomainModule(u, i, encoder="mf", sparse_embeddings=True, **kw)

    def lm(u, i, **kw):
        return LMModule(u, i, backbone="tiny-decoder", **kw)

    with pytest.raises(ValueError, match=r"domain\.init_args\.sparse_embeddings=true is for a domain model trained "
                                         r"alone: in co-training the LM scores .* whole item table"):
        BridgeModule(10, 10, domain=domain, lm=lm, embedding_dim=8)


@pytest.mark.parametrize(("optimizer", "expected"), [
    (lambda p: torch.optim.Adam(p, weight_decay=0.01), r"weight_decay=0.01.* need weight_decay 0"),
    (lambda p: torch.optim.AdamW(p), r"AdamW has weight_decay=0.01"),
    (lambda p: torch.optim.RMSprop(p), r"needs an optimizer that updates only the rows .* got .*RMSprop"),
])
def test_optimizers_that_would_touch_every_row_are_errors(optimizer, expected):
    data = _data()
    module = DomainModule(data.num_users, data.num_items, encoder="mf", optimizer=optimizer,
                          sparse_embeddings=True)
    with pytest.raises(ValueError, match=expected):
        module.configure_optimizers()


def test_adamw_without_weight_decay_becomes_lazy_adam_with_its_settings():
    table = torch.nn.Embedding(5, 3, sparse=True)
    lazy = lazy_optimizer(torch.optim.AdamW(table.parameters(), lr=0.3, betas=(0.8, 0.9), eps=1e-6,
                                            weight_decay=0.0), "model.init_args")
    assert isinstance(lazy, LazyAdam)
    assert {k: lazy.param_groups[0][k] for k in ("lr", "betas", "eps")} == {"lr": 0.3, "betas": (0.8, 0.9),
                                                                            "eps": 1e-6}

import math

import numpy as np
import pytest
import torch
from torchmetrics.retrieval import RetrievalHitRate, RetrievalMRR, RetrievalNormalizedDCG, RetrievalRecall

from lightning_bridge.evaluation.metrics import TopKMetrics
from lightning_bridge.evaluation.top_k import mask_scores

KS = (1, 5, 10, 20, 50)  # 50 > N exercises the cutoff-beyond-catalogue path


def random_batch(gen, b=16, n=40, max_t=5, p_mask=0.3):
    """Random scores (no ties), -1 padded targets (1..max_t per user), masks disjoint from the targets."""
    scores = torch.rand(b, n, generator=gen, dtype=torch.float64).float()
    targets = torch.full((b, max_t), -1, dtype=torch.long)
    mask = torch.rand(b, n, generator=gen) < p_mask
    for u in range(b):
        t = int(torch.randint(1, max_t + 1, (1,), generator=gen))
        items = torch.randperm(n, generator=gen)[:t]
        targets[u, :t] = items
        mask[u, items] = False
    rows, cols = mask.nonzero(as_tuple=True)
    return mask_scores(scores, rows, cols), targets


def reference(scores, targets, ks):
    """Plain loops over users with a full argsort; returns per-user dicts."""
    out = []
    for s, t in zip(scores.numpy(), targets.numpy(), strict=True):
        rel = {int(i) for i in t if i >= 0}
        if not rel:
            continue
        order = [i for i in np.argsort(-s, kind="stable") if np.isfinite(s[i])]
        row = {}
        for k in ks:
            ranks = [r for r, i in enumerate(order[:k]) if i in rel]
            dcg = sum(1 / math.log2(r + 2) for r in ranks)
            idcg = sum(1 / math.log2(r + 2) for r in range(min(len(rel), k)))
            row[f"hr@{k}"] = float(bool(ranks))
            row[f"recall@{k}"] = len(ranks) / len(rel)
            row[f"ndcg@{k}"] = dcg / idcg
            row[f"mrr@{k}"] = 1 / (ranks[0] + 1) if ranks else 0.0
        out.append(row)
    return out


@pytest.mark.parametrize("max_t", [1, 5, 12])  # 1 and 5 count ranks, 12 takes the top-K path
def test_matches_bruteforce_reference(max_t):
    gen = torch.Generator().manual_seed(max_t)
    metric, rows = TopKMetrics(KS), []
    for _ in range(4):
        scores, targets = random_batch(gen, max_t=max_t)
        scores[0, 1:] = float("-inf")  # a user with fewer unmasked items than every K
        scores[0, 0] = 1.0
        metric.update(scores, targets)
        rows += reference(scores, targets, KS)
    got = metric.compute()
    assert set(got) == {f"{m}@{k}" for m in ("hr", "ndcg", "recall", "mrr") for k in KS}
    for key, value in got.items():
        assert value.dtype == torch.float64
        assert value.item() == pytest.approx(np.mean([r[key] for r in rows]), abs=1e-6), key


def test_matches_torchmetrics_retrieval():
    gen = torch.Generator().manual_seed(1)
    ks = (5, 10, 20)
    metric = TopKMetrics(ks)
    refs = {k: {"hr": RetrievalHitRate(top_k=k), "ndcg": RetrievalNormalizedDCG(top_k=k),
                "recall": RetrievalRecall(top_k=k), "mrr": RetrievalMRR(top_k=k)} for k in ks}
    offset = 0
    for _ in range(3):
        scores, targets = random_batch(gen, b=32, n=60)
        metric.update(scores, targets)
        relevant = (torch.arange(scores.shape[1])[None, :, None] == targets[:, None, :]).any(-1)
        keep = torch.isfinite(scores)  # masked items are not retrieval candidates
        user = torch.arange(scores.shape[0])[:, None].expand_as(scores) + offset
        offset += scores.shape[0]
        for k in ks:
            for ref in refs[k].values():
                ref.update(scores[keep], relevant[keep], indexes=user[keep])
    got = metric.compute()
    for k in ks:
        for name, ref in refs[k].items():
            assert got[f"{name}@{k}"].item() == pytest.approx(ref.compute().item(), abs=1e-6), f"{name}@{k}"


def test_rows_without_targets_are_ignored():
    gen = torch.Generator().manual_seed(2)
    scores, targets = random_batch(gen, b=8)
    padded = torch.cat([targets, torch.full((3, targets.shape[1]), -1)])
    padded_scores = torch.cat([scores, torch.rand(3, scores.shape[1])])
    a, b = TopKMetrics(KS), TopKMetrics(KS)
    a.update(scores, targets)
    b.update(padded_scores, padded)
    b.update(torch.rand(2, scores.shape[1]), torch.full((2, 1), -1))  # a batch with no valid row at all
    assert b.count.item() == 8
    for key, value in a.compute().items():
        assert torch.equal(value, b.compute()[key]), key
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert all(v.item() == 0 for v in TopKMetrics(KS).compute().values())  # nothing counted: zeros


def test_masked_target_is_a_miss():
    metric = TopKMetrics((5,))
    scores = torch.tensor([[float("-inf"), 0.1, 0.2]])
    metric.update(scores, torch.tensor([[0, 2]]))  # item 0 masked: one hit (rank 0) out of two relevant
    got = metric.compute()
    assert got["hr@5"].item() == 1 and got["recall@5"].item() == 0.5 and got["mrr@5"].item() == 1
    assert got["ndcg@5"].item() == pytest.approx(1 / (1 + 1 / math.log2(3)))


def test_ties_and_nan_count_against_the_target():
    metric = TopKMetrics((1, 2))
    constant = torch.zeros(2, 3)  # an untrained or collapsed model: every item scored alike
    metric.update(constant, torch.tensor([[0], [2]]))
    assert metric.compute()["hr@2"].item() == 0  # tied with both others: position 2, a miss at every K
    metric.reset()
    broken = torch.tensor([[float("nan"), 0.5, 0.1], [0.3, float("nan"), 0.2]])
    metric.update(broken, torch.tensor([[0], [2]]))  # a NaN target is a miss; a NaN neighbour ranks above
    got = metric.compute()
    assert got["hr@1"].item() == 0 and got["hr@2"].item() == 0


def test_both_ranking_paths_agree():
    gen = torch.Generator().manual_seed(7)
    scores, targets = random_batch(gen, b=64, n=60, max_t=8)  # at the counting path's limit
    wide = torch.cat([targets, torch.full((64, 4), -1)], 1)  # the same targets, padded into the top-K path
    counted, top_k = TopKMetrics(KS), TopKMetrics(KS)
    counted.update(scores.clone(), targets)
    top_k.update(scores.clone(), wide)
    for key, value in counted.compute().items():
        assert value.item() == pytest.approx(top_k.compute()[key].item(), abs=1e-12), key


def test_merge_equals_single_instance():
    gen = torch.Generator().manual_seed(3)
    batches = [random_batch(gen) for _ in range(4)]
    whole, left, right = TopKMetrics(KS), TopKMetrics(KS), TopKMetrics(KS)
    for i, (scores, targets) in enumerate(batches):
        whole.update(scores, targets)
        (left if i % 2 else right).update(scores, targets)
    summed = {"sums": left.sums + right.sums, "count": left.count + right.count}
    left.merge_state(right)
    for key, value in whole.compute().items():
        assert left.compute()[key].item() == pytest.approx(value.item(), abs=1e-12), key
    assert torch.allclose(summed["sums"], whole.sums) and summed["count"] == whole.count


def test_mask_scores_sets_exactly_the_given_entries():
    scores = torch.rand(4, 7)
    before = scores.clone()
    rows, cols = torch.tensor([0, 0, 2, 3]), torch.tensor([1, 6, 0, 3])
    out = mask_scores(scores, rows, cols)
    assert out is scores
    expected = before.clone()
    expected[rows, cols] = float("-inf")
    assert torch.equal(scores, expected)
    assert torch.isinf(scores).sum() == 4 and torch.isinf(scores[rows, cols]).all()

"""The information sharing module: the one place where the domain model and the LM meet."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

InitName = Literal["normal", "xavier_uniform", "xavier_normal", "uniform"]


class InfoSharing(nn.Module):
    """User and item ID embedding tables shared by the domain model and the language model.

    The domain encoder reads these rows as its ego embeddings; the LM reads them (through a projection) as the
    input vectors of its ID tokens. Both sides' optimizers update the same tensors, which is how behaviour
    patterns and text knowledge flow between the two models.

    ``sparse``: lookups by id (``user_rows``, ``item_rows``) give the tables sparse gradients that hold only
    the rows looked up, for a domain model trained alone with a lazy optimizer (``DomainModule``'s
    ``sparse_embeddings``). Reading the whole tables (``forward``) still gives dense gradients.
    """

    def __init__(self, num_users: int, num_items: int, dim: int = 64, init: InitName = "xavier_uniform",
                 init_std: float = 0.1, sparse: bool = False) -> None:
        super().__init__()
        if num_users <= 0 or num_items <= 0 or dim <= 0:
            raise ValueError(f"InfoSharing needs positive sizes, got num_users={num_users}, "
                             f"num_items={num_items}, dim={dim}")
        self.num_users, self.num_items, self.dim = num_users, num_items, dim
        self.init, self.init_std, self.sparse = init, init_std, sparse
        self.user = nn.Embedding(num_users, dim, sparse=sparse)
        self.item = nn.Embedding(num_items, dim, sparse=sparse)
        for table in (self.user, self.item):
            _initialise(table.weight, init, init_std)

    @property
    def settings(self) -> dict[str, object]:
        """The table settings under the names every model's config gives them."""
        return {"embedding_dim": self.dim, "init": self.init, "init_std": self.init_std}

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Both whole tables, as (user_weight, item_weight)."""
        return self.user.weight, self.item.weight

    def user_rows(self, users: torch.Tensor) -> torch.Tensor:
        """The users' rows (a sparse gradient when ``sparse``)."""
        return self.user(users)

    def item_rows(self, items: torch.Tensor) -> torch.Tensor:
        """The items' rows (a sparse gradient when ``sparse``)."""
        return self.item(items)


def tables_for(section: str, num_users: int, num_items: int, shared: InfoSharing | None,
               embedding_dim: int | None, init: InitName | None, init_std: float | None,
               sparse: bool = False) -> InfoSharing:
    """A model's InfoSharing: ``shared`` when a BridgeModule injects it, else its own, built from the settings
    given (InfoSharing's defaults for those left None; ``sparse`` only for a model's own tables).

    Shared tables are configured once, by the bridge: a setting in the model's own config ``section`` that
    differs from them would be silently ignored, so it is an error naming the key.
    """
    given = {"embedding_dim": embedding_dim, "init": init, "init_std": init_std}
    if shared is None:
        own = {"dim": embedding_dim, "init": init, "init_std": init_std}
        return InfoSharing(num_users, num_items, sparse=sparse, **{k: v for k, v in own.items() if v is not None})
    if sparse:
        raise ValueError(f"{section}.sparse_embeddings=true is for a domain model trained alone: in co-training the "
                         f"LM scores every step against the whole item table, so the shared tables get dense "
                         f"gradients anyway, and the LM's optimizer needs them dense; remove it from {section}")
    for name, value in given.items():
        if value is not None and value != shared.settings[name]:
            raise ValueError(f"{section}.{name}={value!r} would be ignored: the shared tables are configured "
                             f"once, by the bridge's model.init_args.{name} ({shared.settings[name]!r}); remove "
                             f"{name} from {section}")
    return shared


def _initialise(weight: torch.Tensor, init: str, std: float) -> None:
    if init == "normal":
        nn.init.normal_(weight, std=std)
    elif init == "xavier_uniform":
        nn.init.xavier_uniform_(weight)
    elif init == "xavier_normal":
        nn.init.xavier_normal_(weight)
    elif init == "uniform":
        nn.init.uniform_(weight, -std, std)
    else:
        raise ValueError(f"InfoSharing init must be one of normal, xavier_uniform, xavier_normal, uniform; "
                         f"got {init!r}")

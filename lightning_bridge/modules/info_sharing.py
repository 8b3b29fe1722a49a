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

    The text channel (``add_text_channel``): every item's vector becomes its ID row plus a learned linear map
    of the LM's representation of its text. Both models read item vectors only through ``forward``,
    ``item_rows`` and ``item_vectors``, so both see the text part; an item nobody has interacted with yet
    still gets a vector that says what it is about. Items without training interactions (``set_seen_items``)
    read their text part alone: their ID rows were only ever pushed down as negatives. With ``id_dropout``
    a seen item also reads its text alone at that rate in training (DropoutNet, Volkovs et al. 2017), so the
    text part learns to score an item by itself, as it must for the unseen ones.
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
        self.text_proj: nn.Linear | None = None
        self.id_dropout = 0.0

    def add_text_channel(self, text_dim: int, id_dropout: float = 0.0) -> None:
        """Adds the text part of every item vector: ``text_proj(item_text_features)``. It starts at zero (so a
        warm-started model scores as before) and reads zeros until ``set_item_text_features`` is called."""
        if not 0 <= id_dropout < 1:
            raise ValueError(f"model.cold_start.item_id_dropout must be in [0, 1), got {id_dropout}")
        self.text_proj = nn.Linear(text_dim, self.dim, bias=False)
        nn.init.zeros_(self.text_proj.weight)
        self.register_buffer("item_text_features", torch.zeros(self.num_items, text_dim))
        self.register_buffer("item_seen", torch.ones(self.num_items))  # 1: the item's ID row counts
        self.id_dropout = id_dropout

    def set_seen_items(self, seen: torch.Tensor) -> None:
        """Which items have training interactions (bool, one per item); the others read their text alone."""
        self.item_seen.copy_(seen.to(self.item_seen))

    def set_item_text_features(self, features: torch.Tensor, items: torch.Tensor, refit: bool = False) -> None:
        """The LM's text representations of these items, unit-normalised: their scale differs between backbones
        (a decoder's last states are far larger than an encoder's mean). Items left out keep a zero text part.

        ``refit``: the map is fitted again (least squares over the seen items among ``items``) so that their text
        parts stay as they were. A map fitted to an older reading of the texts does not fit a new reading by an
        LM that has trained since; refitted where behaviour is known, it carries what the new reading says to
        the items that lean on their text (the unseen ones read their text alone)."""
        features = nn.functional.normalize(features.detach().to(self.item_text_features), dim=-1)
        if refit:
            self._refit_text_proj(features, items)
        self.item_text_features[items] = features

    @torch.no_grad()
    def _refit_text_proj(self, features: torch.Tensor, items: torch.Tensor) -> None:
        seen = self.item_seen[items] > 0
        old = self.item_text_features[items][seen]
        if not old.any():  # the first reading: no text part to keep yet
            return
        driver = "gelsd" if features.device.type == "cpu" else None  # gelsd: rank-deficient readings too
        solution = torch.linalg.lstsq(features[seen].double(), self.text_proj(old).double(), driver=driver)
        self.text_proj.weight.copy_(solution.solution.T)

    def item_vectors(self, id_dropout: bool = True) -> torch.Tensor:
        """Every item's vector: its ID row, plus its text part when the text channel is on. ``id_dropout``
        False: no seen item is dropped out here (an encoder that drops items itself: ``dropped_out``)."""
        if self.text_proj is None:
            return self.item.weight
        return self.item.weight * self._id_weight(self.item_seen, id_dropout) + self.text_vectors()

    def text_vectors(self) -> torch.Tensor:
        """Every item's text part: the whole vector of an item that reads its text alone."""
        return self.text_proj(self.item_text_features)

    def dropped_out(self, shape: torch.Size) -> torch.Tensor:
        """Bool, one per item of a lookup of this shape: which read their text alone in this training pass
        (DropoutNet). None do outside training or without ``id_dropout``."""
        weight = self.item.weight
        if not (self.training and self.id_dropout):
            return torch.zeros(shape, dtype=torch.bool, device=weight.device)
        return torch.rand(shape, dtype=weight.dtype, device=weight.device) < self.id_dropout

    def _id_weight(self, seen: torch.Tensor, id_dropout: bool = True) -> torch.Tensor:
        """``seen`` with a trailing unit axis: 1 where an item's ID row counts in this pass, 0 where it reads its
        text alone."""
        if id_dropout:
            seen = seen * ~self.dropped_out(seen.shape)
        return seen[..., None]

    @property
    def settings(self) -> dict[str, object]:
        """The table settings under the names every model's config gives them."""
        return {"embedding_dim": self.dim, "init": self.init, "init_std": self.init_std}

    def forward(self, id_dropout: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Both whole tables, as (user rows, item vectors)."""
        return self.user.weight, self.item_vectors(id_dropout)

    def user_rows(self, users: torch.Tensor) -> torch.Tensor:
        """The users' rows (a sparse gradient when ``sparse``)."""
        return self.user(users)

    def item_rows(self, items: torch.Tensor) -> torch.Tensor:
        """The items' vectors (a sparse gradient to the ID rows when ``sparse``)."""
        if self.text_proj is None:
            return self.item(items)
        return (self.item(items) * self._id_weight(self.item_seen[items])
                + self.text_proj(self.item_text_features[items]))


def fold_text_channel(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """``state`` with the text channel of the InfoSharing under ``prefix`` folded into its item table: what a
    model without the channel (a DomainModule, the exported tables) loads to score exactly the same."""
    channel = [prefix + name for name in ("text_proj.weight", "item_text_features", "item_seen")]
    if channel[0] not in state:
        return state
    proj, features = state[channel[0]], state[channel[1]]
    seen = state[channel[2]]
    folded = {k: v for k, v in state.items() if k not in channel}
    folded[prefix + "item.weight"] = (state[prefix + "item.weight"] * seen[:, None]
                                      + nn.functional.linear(features.to(proj), proj))
    return folded


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

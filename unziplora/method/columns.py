"""Column separation (ALGORITHM.md 4) as one scheduler object the training loop calls at fixed points.

Hooks, per optimizer step ``g`` (0 for the first step, i.e. completed optimizer steps before it)::

    loss = mse(unet_both(...), noise)
    extra = cs.ortho_loss()                  # before backward; None while the term is off
    if extra is not None: loss = loss + extra
    loss.backward()                          # with accumulation: every micro-batch, then once:
    cs.after_backward(g, grad_scale=...)     # after the LAST backward of step g, before clipping
    clip_grad_norm_(...); optimizer.step()
    cs.after_optimizer_step(g)               # clamp merges to [0, 1]; drop grads of frozen merges
    optimizer.zero_grad(set_to_none=True)
    ...
    cs.finalize()                            # once, after the last step, before saving

``grad_scale`` is the factor the gradients still carry when ``after_backward`` runs: pass the
GradScaler's ``get_scale()`` if you call it before ``scaler.unscale_``, else leave 1.0. The column
score then sees unscaled gradients whatever the precision (ALGORITHM 9 #3).

With ``P = ceil(T / S)`` and ``E`` steps per epoch, ``after_backward(g)`` does (ALGORITHM 4.1):

* ``g % P == 0``          RESET: mask the merge grads (clean fix of 9 #7; left unmasked, as the
                          official code does, with ``faithful``), masks off, merges frozen,
                          orthogonality off;
* ``0 < g % P < E``       ACCUMULATE: nothing (all columns, frozen merges);
* ``g % P == E``          SELECT: score columns from this step's gradients, grow the masks (union),
                          masks on, merges trainable, orthogonality on from step ``g + 1``;
* otherwise               MASKED: merge grads masked to the overlap of the two masks.

Timeline with one image (``E = 1``), e.g. T = 600, S = 3 (P = 200)::

    g = 0            all columns, m = 1 frozen, no ortho     RESET (no-op)
    g = 1            all columns, m frozen, no ortho         SELECT #1
    g = 2 .. 199     masks + merges (trained), ortho         MASKED
    g = 200          masks + merges, ortho                   RESET
    g = 201          all columns, current m frozen           SELECT #2 (masks grow by union)
    g = 202 .. 399   masks + merges, ortho                   MASKED
    g = 400 / 401                                            RESET / SELECT #3
    g = 402 .. 599   masks + merges, ortho                   MASKED
    after 599        finalize(): masks on, merges frozen

The scheduler owns ``requires_grad`` of the merge vectors. With ``enabled=False`` nothing is ever
selected, merges stay frozen at 1 and there is no orthogonality term (ALGORITHM 4.8, last
paragraph). With ``block_separation=False`` every layer is both-sparse.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from enum import Enum
from typing import Any

import torch

from unziplora.method.blocks import BLOCK_TABLE, BOTH, block_class, validate_table
from unziplora.method.layer import BRANCHES, UnZipLoRALinear
from unziplora.method.selection import (
    DEFAULT_THRESHOLD,
    columns_per_round,
    merge_grad_masks,
    ortho_gate,
    select_columns,
)


class Phase(str, Enum):
    """What ``after_backward`` does at a step."""

    OFF = "off"
    RESET = "reset"
    ACCUMULATE = "accumulate"
    SELECT = "select"
    MASKED = "masked"


class ColumnSeparation:
    """Periodic column selection, merge training and the orthogonality loss for a set of layers.

    Args:
        layers: ``{module path: layer}`` from ``inject_unziplora`` (paths drive block classes).
        steps: ``T``, the number of optimizer steps of the run (``TrainConfig.steps``).
        sample_times: ``S``, selection rounds (3 in the paper setting).
        column_ratio: ``ρ``, columns per round = ``floor(out * ρ)``; in (0, 1], validated where
            it is declared (``unziplora.train.config.TrainConfig.column_ratio``, its one bound).
        similarity_lambda: ``λ`` of the orthogonality loss (0.5).
        steps_per_epoch: ``E``, optimizer steps per epoch (1 with one image).
        enabled: column separation on (off = plain joint training of two full LoRAs).
        block_separation: apply ``block_table``; off = every layer both-sparse.
        block_table: group prefix -> class; ``BLOCK_TABLE`` by default.
        avoid_overlap: style avoids content's columns in both-sparse layers (official default).
        finetune_mask: merges learn on each branch's own mask instead of the overlap only.
        threshold: cone threshold on unscaled gradients.
        faithful: the official behaviour of ALGORITHM 9 #4 and #7: columns strictly above the
            k-th score (``selection.official_columns``) and unmasked merge grads on RESET steps.
    """

    def __init__(
        self,
        layers: Mapping[str, UnZipLoRALinear],
        *,
        steps: int,
        sample_times: int = 3,
        column_ratio: float = 0.1,
        similarity_lambda: float = 0.5,
        steps_per_epoch: int = 1,
        enabled: bool = True,
        block_separation: bool = True,
        block_table: Mapping[str, str] | None = None,
        avoid_overlap: bool = True,
        finetune_mask: bool = False,
        threshold: float = DEFAULT_THRESHOLD,
        faithful: bool = False,
    ) -> None:
        if steps <= 0 or sample_times <= 0 or steps_per_epoch <= 0:
            raise ValueError("steps, sample_times and steps_per_epoch must be positive")
        table = dict(BLOCK_TABLE if block_table is None else block_table)
        validate_table(table)
        self.layers = dict(layers)
        self._source = layers  # the mapping the loop holds, so ortho_loss(layers) can use the cache
        self.config: dict[str, Any] = {
            "steps": int(steps),
            "sample_times": int(sample_times),
            "column_ratio": float(column_ratio),
            "similarity_lambda": float(similarity_lambda),
            "steps_per_epoch": int(steps_per_epoch),
            "enabled": bool(enabled),
            "block_separation": bool(block_separation),
            "block_table": table,
            "avoid_overlap": bool(avoid_overlap),
            "finetune_mask": bool(finetune_mask),
            "threshold": float(threshold),
            "faithful": bool(faithful),
        }
        self.period = math.ceil(steps / sample_times)
        self.blocks = {n: (block_class(n, table) if block_separation else BOTH) for n in self.layers}
        self.ortho_on = False
        self.history: list[dict[str, Any]] = []  # one entry per SELECT: step and columns gained
        # Masks change only inside the hooks, so their float forms are cached between them.
        self._ortho_cache: list[tuple[list[torch.nn.Parameter], list[torch.nn.Parameter], torch.Tensor]] | None = None
        self._grad_mask_cache: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
        # With E >= P no step reaches SELECT; the front end tells the user in its own words
        # (``TrainConfig.selection_warning``, checked before the base is loaded).
        self.selects_nothing = bool(enabled and steps_per_epoch >= self.period)
        self._set_merges_trainable(False)

    # ----------------------------------------------------------------------------- schedule
    @property
    def enabled(self) -> bool:
        return self.config["enabled"]

    def phase(self, step: int) -> Phase:
        """The action ``after_backward(step)`` takes (a pure function of the optimizer step)."""
        if not self.enabled:
            return Phase.OFF
        rem = step % self.period
        if rem == 0:
            return Phase.RESET
        if rem < self.config["steps_per_epoch"]:
            return Phase.ACCUMULATE
        if rem == self.config["steps_per_epoch"]:
            return Phase.SELECT
        return Phase.MASKED

    def columns_per_round(self, layer: UnZipLoRALinear) -> int:
        return columns_per_round(layer.out_features, self.config["column_ratio"])

    # ----------------------------------------------------------------------------- hooks
    def ortho_loss(self, layers: Mapping[str, UnZipLoRALinear] | None = None) -> torch.Tensor | None:
        """``λ · mean_layers mean_j |m_c μ_c m_s μ_s|`` while the term is on (ALGORITHM 4.6), else None."""
        lam = self.config["similarity_lambda"]
        if not (self.enabled and self.ortho_on and lam):
            return None
        groups = self._ortho_groups(self.layers if layers is None else layers)
        per_layer = [(torch.stack(mc) * torch.stack(ms) * gate).abs().mean(dim=1) for mc, ms, gate in groups]
        return lam * torch.cat(per_layer).mean()

    def after_backward(self, step: int, grad_scale: float = 1.0) -> Phase:
        """Run the column-separation control of optimizer step ``step``; returns its phase."""
        phase = self.phase(step)
        if phase is Phase.RESET:
            if not self.config["faithful"]:
                self._mask_merge_grads()
            for layer in self.layers.values():
                for branch in BRANCHES:
                    layer.set_mask_active(branch, False)
            self._set_merges_trainable(False)
            self.ortho_on = False
            self._invalidate()
        elif phase is Phase.SELECT:
            gained = {
                name: select_columns(
                    layer,
                    self.blocks[name],
                    self.columns_per_round(layer),
                    avoid=self.config["avoid_overlap"],
                    threshold=self.config["threshold"],
                    grad_scale=grad_scale,
                    faithful=self.config["faithful"],
                )
                for name, layer in self.layers.items()
            }
            self.history.append({"step": int(step), "gained": gained})
            self._invalidate()
            self._set_merges_trainable(True)
            self.ortho_on = True
        elif phase is Phase.MASKED:
            self._mask_merge_grads()
        return phase

    @torch.no_grad()
    def after_optimizer_step(self, step: int) -> None:
        """Clamp the merges to [0, 1] (ALGORITHM 4.7) and drop the grads of frozen merges, so an
        optimizer that zeroes instead of freeing grads cannot move them by momentum."""
        if not self.enabled:
            return
        merges = [layer.merge[b] for layer in self.layers.values() for b in BRANCHES]
        torch._foreach_clamp_min_(merges, 0.0)
        torch._foreach_clamp_max_(merges, 1.0)
        for m in merges:
            if not m.requires_grad:
                m.grad = None

    def finalize(self) -> None:
        """End of training (ALGORITHM 4.7): masks on, merges frozen, no orthogonality term.

        Saved LoRAs then carry the masks baked into their up rows (``state.lora_state_dict``).
        If no selection ever happened (``E >= P`` or disabled), masks stay off rather than
        switching on all-zero masks that would erase both LoRAs.
        """
        if self.enabled and self.history:
            for layer in self.layers.values():
                for branch in BRANCHES:
                    layer.set_mask_active(branch, True)
        self._set_merges_trainable(False)
        self.ortho_on = False
        self._invalidate()

    # ----------------------------------------------------------------------------- reporting
    def column_counts(self) -> dict[str, dict[str, int]]:
        """Selected columns per layer and branch (the union over the rounds so far)."""
        return {name: {b: int(layer.mask(b).sum()) for b in BRANCHES} for name, layer in self.layers.items()}

    def group_counts(self) -> dict[str, dict[str, float]]:
        """Mean selected columns per attention group and branch, for logs (ALGORITHM 9, open questions)."""
        sums: dict[str, dict[str, float]] = {}
        seen: dict[str, int] = {}
        for name, counts in self.column_counts().items():
            group = name.split(".transformer_blocks.")[0]
            acc = sums.setdefault(group, {b: 0.0 for b in BRANCHES})
            for b in BRANCHES:
                acc[b] += counts[b]
            seen[group] = seen.get(group, 0) + 1
        return {g: {b: v / seen[g] for b, v in acc.items()} for g, acc in sums.items()}

    # ----------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume bit-exactly (merge *values* live with the LoRA parameters)."""
        return {
            "config": dict(self.config),
            "ortho_on": self.ortho_on,
            "merges_trainable": self._merges_trainable,
            "history": [dict(h) for h in self.history],
            "masks": {
                n: {b: layer.mask(b).detach().cpu().clone() for b in BRANCHES} for n, layer in self.layers.items()
            },
            "active": {n: {b: layer.mask_active(b) for b in BRANCHES} for n, layer in self.layers.items()},
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`; refuses one written with a different schedule or layer set."""
        saved = {"faithful": False, **dict(state["config"])}  # checkpoints from before the key existed
        if "max_train_steps" in saved:  # checkpoints from before the option had one name end to end
            saved["steps"] = saved.pop("max_train_steps")
        if saved != self.config:
            raise ValueError("column-separation state was saved with different settings; resume with the same ones")
        if set(state["masks"]) != set(self.layers):
            raise ValueError("column-separation state covers different layers than this model")
        for name, layer in self.layers.items():
            for b in BRANCHES:
                layer.set_mask(b, state["masks"][name][b])
                layer.set_mask_active(b, bool(state["active"][name][b]))
        self.history = [dict(h) for h in state["history"]]
        self.ortho_on = bool(state["ortho_on"])
        self._set_merges_trainable(bool(state["merges_trainable"]))
        self._invalidate()

    # ----------------------------------------------------------------------------- internals
    def _set_merges_trainable(self, trainable: bool) -> None:
        self._merges_trainable = trainable
        for layer in self.layers.values():
            for b in BRANCHES:
                layer.merge[b].requires_grad_(trainable)

    def _invalidate(self) -> None:
        """Masks or their on/off state changed: rebuild the cached float masks on next use."""
        self._ortho_cache = None
        self._grad_mask_cache = None

    @torch.no_grad()
    def _mask_merge_grads(self) -> None:
        if self._grad_mask_cache is None:
            self._grad_mask_cache = {
                name: tuple(
                    m.to(layer.merge["content"].dtype) for m in merge_grad_masks(layer, self.config["finetune_mask"])
                )
                for name, layer in self.layers.items()
            }
        grads: list[torch.Tensor] = []
        masks: list[torch.Tensor] = []
        for name, layer in self.layers.items():
            g_c, g_s = layer.merge["content"].grad, layer.merge["style"].grad
            if g_c is None or g_s is None:  # as the official code: only when both exist
                continue
            grads += [g_c, g_s]
            masks += list(self._grad_mask_cache[name])
        if grads:
            torch._foreach_mul_(grads, masks)

    def _ortho_groups(self, layers: Mapping[str, UnZipLoRALinear]) -> list[tuple[list[Any], list[Any], torch.Tensor]]:
        """Layers grouped by width so the per-step loss is a handful of kernels, not ~3000.

        The mask part is cached between hook calls (masks only change inside the hooks).
        """
        own = layers is self.layers or layers is self._source
        if own and self._ortho_cache is not None:
            return self._ortho_cache
        by_width: dict[tuple[int, torch.device], list[UnZipLoRALinear]] = {}
        for layer in layers.values():
            by_width.setdefault((layer.out_features, layer.merge["content"].device), []).append(layer)
        groups = [
            (
                [layer.merge["content"] for layer in members],
                [layer.merge["style"] for layer in members],
                torch.stack([ortho_gate(layer) for layer in members]).to(members[0].merge["content"].dtype),
            )
            for members in by_width.values()
        ]
        if own:
            self._ortho_cache = groups
        return groups

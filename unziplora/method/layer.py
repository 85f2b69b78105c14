"""The two-branch UnZipLoRA wrapper around one attention projection (ALGORITHM.md 1).

``y = W x0 + b + (B_c A_c x_c) * g_c + (B_s A_s x_s) * g_s`` where ``x0`` is the base input,
``x_c`` / ``x_s`` the branch inputs (different only for prompt-separated cross-attention keys and
values) and ``g`` a per-output-column gate built from the merge vector, the binary column mask
and a user multiplier. The layer only computes: column selection lives in
:mod:`unziplora.method.columns`, injection in :mod:`unziplora.method.inject`.

The low-rank product is always applied factorised, ``(x A^T)(B g)^T``: the official code built the
dense ``in x out`` product on every call (ALGORITHM.md 9, #1), which costs far more than the LoRA
itself at SDXL shapes. Scaling the ``[out, r]`` up matrix by the gate is the same arithmetic as
scaling the output columns, but touches ``out*r`` numbers instead of ``tokens*out``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

BRANCHES: tuple[str, str] = ("content", "style")
MODES: tuple[str, ...] = ("both", "content", "style")
INITS: tuple[str, ...] = ("official", "zero")


def _check_branch(branch: str) -> None:
    if branch not in BRANCHES:
        raise ValueError(f"branch must be one of {BRANCHES}; got {branch!r}")


def init_generator(seed: int) -> torch.Generator:
    """The CPU generator a training run initialises its layers from (one owner of seed -> init)."""
    return torch.Generator().manual_seed(seed)


def initial_factors(
    rank: int, in_features: int, out_features: int, init: str, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One branch's ``(A, B)`` at initialisation, fp32 on the CPU, drawn from ``generator`` in a
    fixed order (A, then B). The one owner of the init: layers use it, and
    :mod:`unziplora.method.movement` redraws it to measure how far training moved each LoRA."""
    std = 1.0 / rank
    a = torch.randn((rank, in_features), generator=generator, dtype=torch.float32) * std
    if init == "zero":
        return a, torch.zeros((out_features, rank), dtype=torch.float32)
    return a, torch.randn((out_features, rank), generator=generator, dtype=torch.float32) * std


class UnZipLoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a content and a style LoRA branch with per-column gates.

    Attributes:
        base_layer: the wrapped projection (kept as is; folding edits its weight in place).
        lora_A / lora_B: ``ParameterDict`` keyed by branch, ``[r, in]`` / ``[out, r]``, fp32.
        merge: ``ParameterDict`` keyed by branch, ``[out]`` merge vectors (ones at init).
        mask_content / mask_style: bool ``[out]`` buffers, the selected columns.
        mask_active_content / mask_active_style: bool 0-dim buffers, whether masks gate the output.
        mode: ``"both"`` (training, combined generation), ``"content"`` or ``"style"``.
        scale_content / scale_style: plain float multipliers for generation (default 1.0).
        separate_inputs: True when the branches may see inputs other than the base input (the
            cross-attention key/value projections under prompt separation); decides what
            :meth:`fold` may put into the base weight.
        step_weights: whether a UNet forward may hand this layer weights prepared for all layers
            at once (:mod:`unziplora.method.step_weights`); False keeps the plain per-layer path,
            the reference the tests compare against.
    """

    def __init__(
        self,
        base_layer: nn.Linear,
        rank: int,
        *,
        init: str = "official",
        separate_inputs: bool = False,
        dtype: torch.dtype = torch.float32,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(base_layer, nn.Linear):
            raise TypeError(f"UnZipLoRALinear wraps nn.Linear; got {type(base_layer).__name__}")
        if rank <= 0:
            raise ValueError(f"rank must be a positive integer; got {rank}")
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}; got {init!r}")
        self.base_layer = base_layer
        self.in_features = base_layer.in_features
        self.out_features = base_layer.out_features
        self.separate_inputs = separate_inputs
        device = base_layer.weight.device
        out, inp = self.out_features, self.in_features
        # LoRA weights and merges are fp32 masters even over a half-precision base (ALGORITHM 1.1).
        self.lora_A = nn.ParameterDict(
            {b: nn.Parameter(torch.empty(rank, inp, device=device, dtype=dtype)) for b in BRANCHES}
        )
        self.lora_B = nn.ParameterDict(
            {b: nn.Parameter(torch.empty(out, rank, device=device, dtype=dtype)) for b in BRANCHES}
        )
        self.merge = nn.ParameterDict({b: nn.Parameter(torch.ones(out, device=device, dtype=dtype)) for b in BRANCHES})
        for b in BRANCHES:
            self.register_buffer(f"mask_{b}", torch.zeros(out, dtype=torch.bool, device=device))
            self.register_buffer(f"mask_active_{b}", torch.zeros((), dtype=torch.bool, device=device))
        # Python mirrors of the on/off buffers: reading a CUDA bool in forward would sync the
        # device once per layer per step; the buffers stay the saved/moved source of truth.
        self._active: dict[str, bool] = {b: False for b in BRANCHES}
        self.register_load_state_dict_post_hook(_refresh_after_load)
        self.scale_content = 1.0
        self.scale_style = 1.0
        self._mode = "both"
        self._folded: tuple[str, ...] = ()
        self.step_weights = True
        # On a self-attention's to_q: its (to_q, to_k, to_v) layers, which read the same input;
        # step_weights.prepare then stacks their down matrices as one [6r, in] `_prepared_qkv`.
        self.qkv_peers: tuple[UnZipLoRALinear, UnZipLoRALinear, UnZipLoRALinear] | None = None
        self._prepared_qkv: torch.Tensor | None = None
        # (down [2r, in] or None, gated up [out, 2r], weights_key() when built, prompt K/V part or
        # None), set by step_weights.prepare; the K/V part is (content input, style input, LoRA
        # output); layers given a K/V part get no down slice (other inputs take the plain path).
        self._prepared: tuple[Any, ...] | None = None
        self.reset_parameters(init, generator=generator)

    # ----------------------------------------------------------------------------- set-up
    @torch.no_grad()
    def reset_parameters(self, init: str = "official", generator: torch.Generator | None = None) -> None:
        """``official``: A and B i.i.d. N(0, (1/r)^2) (ALGORITHM 1.1, so the update is non-zero at
        step 0); ``zero``: the same A, B = 0 (plain-LoRA style, output equals the base at step 0)."""
        for b in BRANCHES:
            a, up = self.lora_A[b], self.lora_B[b]
            a0, up0 = initial_factors(a.shape[0], a.shape[1], up.shape[0], init, generator)
            a.copy_(a0.to(a))
            up.copy_(up0.to(up))
            self.merge[b].fill_(1.0)

    @property
    def weight(self) -> torch.Tensor:
        """The base weight, for code that inspects ``attn.to_q.weight`` (dtype, device)."""
        return self.base_layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base_layer.bias

    def rank(self, branch: str) -> int:
        _check_branch(branch)
        return int(self.lora_A[branch].shape[0])

    # ----------------------------------------------------------------------------- state
    @property
    def mode(self) -> str:
        return self._mode

    @mode.setter
    def mode(self, value: str) -> None:
        if value not in MODES:
            raise ValueError(f"mode must be one of {MODES}; got {value!r}")
        if self._folded and value != self._mode:
            raise RuntimeError("cannot change the mode of a folded UnZipLoRA layer; unfold() first")
        self._mode = value

    def mask(self, branch: str) -> torch.Tensor:
        _check_branch(branch)
        return getattr(self, f"mask_{branch}")

    def mask_active(self, branch: str) -> bool:
        _check_branch(branch)
        return self._active[branch]

    @torch.no_grad()
    def set_mask(self, branch: str, mask: torch.Tensor) -> None:
        """Replace the column mask of ``branch`` (any 0/1 or bool tensor of length ``out``)."""
        target = self.mask(branch)
        if mask.shape != target.shape:
            raise ValueError(f"mask for {branch} must have shape {tuple(target.shape)}; got {tuple(mask.shape)}")
        target.copy_(mask.to(device=target.device, dtype=torch.bool))

    @torch.no_grad()
    def set_mask_active(self, branch: str, active: bool) -> None:
        """Switch whether the mask of ``branch`` gates the output (the official ``masked_matrix``)."""
        _check_branch(branch)
        getattr(self, f"mask_active_{branch}").fill_(bool(active))
        self._active[branch] = bool(active)

    def refresh_flags(self) -> None:
        """Re-read the on/off mirrors from the buffers (after writing the buffers directly)."""
        for b in BRANCHES:
            self._active[b] = bool(getattr(self, f"mask_active_{b}").item())

    def branches_in_mode(self) -> tuple[str, ...]:
        return BRANCHES if self._mode == "both" else (self._mode,)

    def gate(self, branch: str) -> torch.Tensor:
        """Per-output-column multiplier of ``branch`` in the current mode (ALGORITHM 1.3):
        ``scale * (merge if mode == "both") * (mask if active)``; zeros if the mode excludes it."""
        _check_branch(branch)
        merge = self.merge[branch]
        if branch not in self.branches_in_mode():
            return torch.zeros_like(merge)
        scale = self.scale_content if branch == "content" else self.scale_style
        if self._mode == "both":
            gate = merge if scale == 1.0 else merge * scale  # scale is 1 in training: one op fewer
        else:
            gate = torch.full_like(merge, scale)
        if self._active[branch]:
            gate = gate * self.mask(branch).to(gate.dtype)
        return gate

    def delta_weight(self, branch: str) -> torch.Tensor:
        """Dense ``[out, in]`` update of ``branch`` in the current mode, fp32 (export/folding only)."""
        up = self.lora_B[branch].float() * self.gate(branch).float()[:, None]
        return up @ self.lora_A[branch].float()

    def weights_key(self) -> tuple[Any, ...]:
        """Everything the gated weights depend on; prepared weights are used only while it is unchanged.

        In-place edits (optimizer steps, ``copy_``, ``set_mask``) bump the tensors' version counters;
        replaced parameters change identity; modes, scales and on/off flags are plain attributes.
        """
        tensors = (
            *self.lora_A.values(),
            *self.lora_B.values(),
            *self.merge.values(),
            self.mask_content,
            self.mask_style,
        )
        return (
            tuple((id(t), t._version, t.requires_grad) for t in tensors),
            self._active["content"],
            self._active["style"],
            self._mode,
            self.scale_content,
            self.scale_style,
            self._folded,
        )

    # ----------------------------------------------------------------------------- forward
    def forward(
        self,
        x: torch.Tensor,
        content_input: torch.Tensor | None = None,
        style_input: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Base projection of ``x`` plus the gated branches of the current mode.

        ``content_input`` / ``style_input`` default to ``x``; they must have ``x``'s leading shape
        (tokens are added position by position, ALGORITHM 2.2). Branches folded into the base
        weight are skipped. Weights prepared for this forward by the UNet's pre-hook are used
        while still current (:mod:`unziplora.method.step_weights`).
        """
        prepared = self._prepared
        if prepared is not None and torch.is_grad_enabled():
            usable = torch.is_autocast_enabled(x.device.type) or x.dtype == prepared[1].dtype
            if usable and prepared[2] == self.weights_key():
                kv = prepared[3]
                if (
                    kv is not None
                    and content_input is kv[0]
                    and style_input is kv[1]
                    and x.shape[:-1] == kv[2].shape[:-1]
                ):
                    return self.base_layer(x) + kv[2]
                if prepared[0] is not None:  # None: only the K/V delta was prepared
                    return self._forward_prepared(x, content_input, style_input, prepared[0], prepared[1])
            self._prepared = None
        y = self.base_layer(x)
        branches = [b for b in self.branches_in_mode() if b not in self._folded]
        if not branches:
            return y
        inputs = {
            "content": x if content_input is None else content_input,
            "style": x if style_input is None else style_input,
        }
        lora_dtype = self.lora_A[branches[0]].dtype
        autocast = torch.is_autocast_enabled(x.device.type)
        groups: list[tuple[torch.Tensor, list[str]]] = []
        for b in branches:  # branches sharing one input tensor run as a single rank-2r product
            for inp, members in groups:
                if inp is inputs[b]:
                    members.append(b)
                    break
            else:
                groups.append((inputs[b], [b]))
        for inp, members in groups:
            if inp.shape[:-1] != x.shape[:-1]:
                raise ValueError(
                    f"branch input shape {tuple(inp.shape)} does not match the base input {tuple(x.shape)}"
                )
            if not autocast:
                inp = inp.to(lora_dtype)
            if len(members) == 1:
                down, up = self.lora_A[members[0]], self.lora_B[members[0]] * self.gate(members[0])[:, None]
            else:
                down = torch.cat([self.lora_A[b] for b in members], dim=0)
                up = torch.cat([self.lora_B[b] * self.gate(b)[:, None] for b in members], dim=1)
            y = y + F.linear(F.linear(inp, down), up).to(y.dtype)
        return y

    def project_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """Self-attention q, k and v of ``x`` with one down product for the three layers, or None
        when the prepared weights of any of them are missing or out of date (call each layer then)."""
        down = self._prepared_qkv
        peers = self.qkv_peers
        if down is None or peers is None or not torch.is_grad_enabled():
            return None
        ups = []
        for layer in peers:
            prepared = layer._prepared
            if prepared is None or prepared[2] != layer.weights_key():
                return None
            ups.append(prepared[1])
        if not (torch.is_autocast_enabled(x.device.type) or x.dtype == down.dtype):
            return None
        rank2 = down.shape[0] // 3
        parts = F.linear(x, down).reshape(-1, down.shape[0]).split(rank2, dim=1)
        outputs = []
        for layer, h, up in zip(peers, parts, ups):
            y = layer.base_layer(x)
            outputs.append(torch.addmm(y.reshape(-1, layer.out_features), h, up.t()).view(y.shape))
        return outputs[0], outputs[1], outputs[2]

    def _forward_prepared(
        self,
        x: torch.Tensor,
        content_input: torch.Tensor | None,
        style_input: torch.Tensor | None,
        down: torch.Tensor,
        up: torch.Tensor,
    ) -> torch.Tensor:
        """Mode "both" with weights from :func:`unziplora.method.step_weights.prepare`:
        ``y = W x + b + (x_c A_c^T)(B_c g_c)^T + (x_s A_s^T)(B_s g_s)^T`` as one ``addmm`` per input."""
        y = self.base_layer(x)
        x_c = x if content_input is None else content_input
        x_s = x if style_input is None else style_input
        for inp in (x_c, x_s):
            if inp.shape[:-1] != x.shape[:-1]:
                raise ValueError(
                    f"branch input shape {tuple(inp.shape)} does not match the base input {tuple(x.shape)}"
                )
        flat = y.reshape(-1, self.out_features)
        if x_c is x_s:  # one rank-2r product for both branches
            flat = torch.addmm(flat, F.linear(x_c, down).reshape(-1, down.shape[0]), up.t())
        else:
            rank = down.shape[0] // 2
            (down_c, down_s), (up_c, up_s) = down.split(rank), up.split(rank, dim=1)
            flat = torch.addmm(flat, F.linear(x_c, down_c).reshape(-1, rank), up_c.t())
            flat = torch.addmm(flat, F.linear(x_s, down_s).reshape(-1, rank), up_s.t())
        return flat.view(y.shape)

    # ----------------------------------------------------------------------------- folding
    @property
    def folded(self) -> tuple[str, ...]:
        """Branches currently folded into the base weight (empty when unfolded)."""
        return self._folded

    @torch.no_grad()
    def fold(self, include_separate: bool = False) -> tuple[str, ...]:
        """Add the gated branches of the current mode into the base weight, for fast inference.

        A branch is folded only if its input is the base input: always, except on layers with
        ``separate_inputs`` (prompt-separated cross-attention K/V), which are folded only with
        ``include_separate=True`` (a single prompt, so all inputs are equal). Folding again first
        unfolds, so the result never stacks. Returns the folded branches.

        No copy of the weight is kept (at full SDXL size that copy was 1.9 GB in fp16):
        :meth:`unfold` subtracts the same delta again, and the few entries where rounding makes
        ``(w + d) - d`` differ from ``w`` are kept here, indices and original values, so the
        restore is still bit-exact. With deltas about 5% of the weights that is about 4% of the
        entries in fp16 (13% of a copy's bytes), fewer for smaller deltas.
        """
        self.unfold()
        if self.separate_inputs and not include_separate:
            return ()
        branches = self.branches_in_mode()
        weight = self.base_layer.weight
        delta = self._fold_delta(branches)
        folded = (weight.float() + delta).to(weight.dtype)
        wrong = ((folded.float() - delta).to(weight.dtype) != weight).flatten().nonzero().squeeze(1).to(torch.int32)
        self.register_buffer("_fold_fix_index", wrong, persistent=False)
        self.register_buffer("_fold_fix_value", weight.flatten()[wrong].clone(), persistent=False)
        weight.copy_(folded)
        self._fold_versions = self._branch_versions()
        self._folded = tuple(branches)
        return self._folded

    def _fold_delta(self, branches: Sequence[str]) -> torch.Tensor:
        weight = self.base_layer.weight
        return sum((self.delta_weight(b).to(weight.device) for b in branches), torch.zeros((), device=weight.device))

    def _branch_versions(self) -> tuple[Any, ...]:
        """What the folded delta depends on: version counters of factors, merges and masks; the scales."""
        base = self.base_layer.weight
        tensors = [t for t in (*self.parameters(), *self.buffers()) if t is not base and not _is_fold_fix(self, t)]
        return (self.scale_content, self.scale_style, *(id(t) for t in tensors), *(t._version for t in tensors))

    @torch.no_grad()
    def unfold(self) -> None:
        """Restore the base weight from before :meth:`fold` bit-exactly (no-op when not folded)."""
        if not self._folded and "_fold_fix_index" not in self._buffers:
            return
        if self._branch_versions() != getattr(self, "_fold_versions", None):
            raise RuntimeError("an UnZipLoRA layer's branches changed while folded; unfold() before changing them")
        weight = self.base_layer.weight
        index = self._buffers.pop("_fold_fix_index")
        value = self._buffers.pop("_fold_fix_value")
        restored = (weight.float() - self._fold_delta(self._folded)).to(weight.dtype)
        restored.view(-1)[index.long()] = value
        weight.copy_(restored)
        self._folded = ()

    def extra_repr(self) -> str:
        ranks = ", ".join(f"{b}_rank={self.rank(b)}" for b in BRANCHES)
        return (
            f"in={self.in_features}, out={self.out_features}, {ranks}, mode={self._mode!r}, "
            f"separate_inputs={self.separate_inputs}"
        )


def _is_fold_fix(layer: UnZipLoRALinear, tensor: torch.Tensor) -> bool:
    return any(tensor is layer._buffers.get(name) for name in ("_fold_fix_index", "_fold_fix_value"))


def _refresh_after_load(module: nn.Module, incompatible_keys: Any) -> None:
    """``load_state_dict`` writes the on/off buffers; keep the Python mirrors in step."""
    if isinstance(module, UnZipLoRALinear):
        module.refresh_flags()

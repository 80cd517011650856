"""The token-pruned Mamba (SIMBA.md §4, §8): hierarchical pruning over a dense LM's weights, of any architecture.

The dense model is used only through the surface every architecture's LM shares (simba_convert/arch/__init__.py):
`backbone.embedding`, each layer's `add_norm` and `mixer(h, return_state=, return_internals=)`, the internals'
`score(...)` (Mamba-1's impact score, Mamba-2's SSD score), `head`, `step` and `config.n_layer`. Nothing here
depends on which architecture it is.

Each sample keeps its own set of alive tokens, held compacted and right-padded: `pos [B, k]` gives the
original position of each slot and `valid [B, k]` which slots are real. Right padding is harmless
because every operation of a layer is causal along the sequence: padded slots come after all real ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..errors import ShapeError
from .select import compact, gather_rows, gather_slots, select_kept, select_kept_dense_rows
from .spec import PruningSpec, forced_count, keep_counts


@dataclass
class PruneInfo:
    """Which original positions each layer processed: kept[l] is [B, k_l] (-1 in padded slots)."""

    kept: list[torch.Tensor]
    lengths: torch.Tensor  # [B] real tokens per sample

    def counts(self) -> torch.Tensor:
        """[n_layer, B] tokens processed by each layer for each sample."""
        return torch.stack([(k >= 0).sum(1) for k in self.kept])

    def pruned_mask(self, L: int) -> torch.Tensor:
        """[B, L] True where a real position did not reach the last layer (its logits come off the highway)."""
        last = self.kept[-1]
        reached = torch.zeros(last.shape[0], L + 1, dtype=torch.bool, device=last.device)
        reached.scatter_(1, torch.where(last >= 0, last, L), True)
        real = torch.arange(L, device=last.device)[None] < self.lengths[:, None]
        return real & ~reached[:, :L]


class PrunedMambaLM(nn.Module):
    """A dense Mamba LM (MambaLM, Mamba2LM) run with Simba token pruning; `forward` gives logits for every position."""

    is_pruned = True
    checkpoint_layers = False  # fine-tuning sets it: mixers are recomputed in the backward pass (less memory)

    def __init__(self, dense, spec: PruningSpec, *, score_backend: str = "auto"):
        super().__init__()
        if spec.n_layer != dense.config.n_layer:
            raise ShapeError(f"spec has {spec.n_layer} ratios for a model with {dense.config.n_layer} layers")
        self.dense = dense
        self.spec = spec
        self.score_backend = score_backend

    @property
    def config(self):
        return self.dense.config

    @property
    def device(self):
        return self.dense.device

    @property
    def dtype(self):
        return self.dense.dtype

    def with_spec(self, spec: PruningSpec) -> "PrunedMambaLM":
        return PrunedMambaLM(self.dense, spec, score_backend=self.score_backend)

    def forward(self, input_ids, attention_mask=None, *, protect=None, return_info=False, generator=None, num_last=None):
        """input_ids [B, L] (mask [B, L], True = real) -> logits [B, L, V] (pad positions: zeros).

        num_last=n returns only the logits of each sample's last n real positions, [B, n, V], and skips
        the head elsewhere (what calibration and protected-position evaluation need).
        """
        logits, info, _ = self._run(input_ids, attention_mask, protect, generator, want_state=False, num_last=num_last,
                                    want_info=return_info)
        return (logits, info) if return_info else logits

    def _run(self, input_ids, attention_mask, protect, generator, want_state, num_last=None, want_info=True):
        P = self.spec.protect if protect is None else int(protect)
        bsz, L = input_ids.shape
        dev = input_ids.device
        mask = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        layers = self.dense.backbone.layers
        emb = self.dense.backbone.embedding(input_ids)
        # Without an attention mask every row is all real and keeps the same counts, so the protected tokens are
        # the last slots of every row: selection needs no masks (known on the host, no synchronisation).
        uniform = attention_mask is None
        if uniform:
            pos = torch.arange(L, device=dev).expand(bsz, L)
            valid = None
            lengths = torch.full((bsz,), L, device=dev)
            n_real = [L] * bsz
            hidden = emb
        else:
            pos, valid, lengths = compact(mask)
            n_real = lengths.tolist()  # the one host sync: every later count follows from these
            hidden = gather_slots(emb, pos.clamp_max(L - 1))
        if num_last is not None and num_last > min(n_real):
            raise ShapeError(f"num_last={num_last} exceeds the shortest sample ({min(n_real)} real tokens)")
        real_pos = pos  # [B, n]: each sample's real positions in order (the compaction, kept for num_last)
        protected = None
        if not uniform:  # rank among the sample's real tokens decides protection (positions differ under left padding)
            rank = torch.arange(pos.shape[1], device=dev).expand_as(pos)
            protected = valid & (rank >= (lengths[:, None] - max(1, P)))
        if self.spec.criterion == "random" and generator is None:
            generator = torch.Generator(device=dev).manual_seed(self.spec.seed)
        counts = [keep_counts(self.spec.keep_ratios, n, P) for n in n_real]  # [B][layer], known on the host
        # The last num_last real tokens are protected, so they reach the top layer: when they are all the logits
        # asked for, no token's stream needs freezing on its way out (no [B, L, d] highway buffer at all).
        freeze = num_last is None or any(num_last > forced_count(n, P) for n in n_real)
        # Positions are bookkeeping for the freeze, the masks and PruneInfo; the rows alone need only the slots.
        track = want_info or freeze or not uniform
        kept_log, states, residual = [], [], None
        frozen = None  # [B, L+1, d]: the final stream of every token; slot L absorbs padding writes
        for i, layer in enumerate(layers):
            if track:
                kept_log.append(pos if uniform else torch.where(valid, pos, -1))
            h, residual = layer.add_norm(hidden, residual)
            prune = i + 1 < len(layers) and any(c[i + 1] < c[i] for c in counts)
            res = self._mixer(layer, h, want_state, prune)
            hidden, extras = (res[0], res[1:]) if isinstance(res, tuple) else (res, ())
            if want_state:
                states.append(extras[0])
            if not prune:
                continue
            it = extras[-1]
            with torch.no_grad():  # scores only pick indices (top-k is not differentiated): keep no graph
                scores = it.score(criterion=self.spec.criterion, signed=self.spec.signed, mask=valid, y=hidden,
                                  generator=generator, backend=self.score_backend)
            k_next = [c[i + 1] for c in counts]
            if uniform:
                slots = select_kept_dense_rows(scores, forced_count(L, P), k_next[0])
            else:
                slots, new_valid = select_kept(scores, valid, protected, k_next)
            if freeze:
                # hidden + residual is what the next add_norm would form; forming it once here serves the freeze
                # and the survivors (the next add_norm, with residual None, adds nothing).
                stream = hidden.to(residual.dtype) + residual
                frozen = self._freeze(frozen, stream, pos, valid, L)
                (hidden,), residual = gather_rows(slots, stream), None
            else:
                hidden, residual = gather_rows(slots, hidden, residual)
            if uniform:
                pos = torch.gather(pos, 1, slots) if track else None
            else:
                pos, valid = torch.where(new_valid, gather_slots(pos, slots), L), new_valid
                protected = gather_slots(protected, slots) & valid
        stream = hidden.to(residual.dtype) + residual
        info = PruneInfo(kept=kept_log, lengths=lengths) if track else None
        if not freeze:  # each sample's last num_last real tokens are its last num_last slots of the top layer
            K = stream.shape[1]
            if uniform:
                return self.dense.head(stream[:, K - num_last:]), info, states
            top = torch.tensor([c[-1] for c in counts], device=dev)[:, None] - num_last
            (last,) = gather_rows(top + torch.arange(num_last, device=dev)[None], stream)
            return self.dense.head(last), info, states
        frozen = self._freeze(frozen, stream, pos, valid, L)
        if num_last is not None:
            last_real = self._last_real_positions(real_pos, lengths, int(num_last))
            return self.dense.head(gather_slots(frozen, last_real)), info, states
        logits = self.dense.head(frozen[:, :L])
        logits = logits.masked_fill(~mask[:, :, None], 0.0)
        return logits, info, states

    def _mixer(self, layer, h, want_state, internals):
        if self.checkpoint_layers and torch.is_grad_enabled():
            from torch.utils.checkpoint import checkpoint

            return checkpoint(layer.mixer, h, use_reentrant=False, return_state=want_state, return_internals=internals)
        return layer.mixer(h, return_state=want_state, return_internals=internals)

    @staticmethod
    def _last_real_positions(real_pos: torch.Tensor, lengths: torch.Tensor, n: int) -> torch.Tensor:
        """[B, n] original positions of each sample's last n real tokens, from the compacted positions [B, n_max]."""
        rank = lengths[:, None] - n + torch.arange(n, device=real_pos.device)[None]
        return torch.gather(real_pos, 1, rank)

    @staticmethod
    def _freeze(frozen, stream, pos, valid, L):
        """Write the current stream of every alive token to its original position (later layers overwrite survivors).

        valid None: every slot is real."""
        if frozen is None:
            frozen = stream.new_zeros(stream.shape[0], L + 1, stream.shape[2])
        idx = (pos if valid is None else torch.where(valid, pos, L))[:, :, None].expand(-1, -1, stream.shape[2])
        if torch.is_grad_enabled():  # out of place, so autograd sees each write (fine-tuning)
            return frozen.scatter(1, idx, stream)
        return frozen.scatter_(1, idx, stream)

    # --- generation (SIMBA.md §8): pruned prefill, dense recurrent decoding --------------------------
    @torch.no_grad()
    def prefill(self, input_ids: torch.Tensor, attention_mask=None, *, protect=None):
        """Run the prompt pruned; return last-position logits [B, V] and per-layer (conv, ssm) states.

        The states are those of each layer's compacted sequence. Samples are run one by one when padded,
        so each state ends at that sample's own last token.
        """
        if attention_mask is not None and not bool(attention_mask.bool().all()):
            outs = [self.prefill(input_ids[b: b + 1, attention_mask[b].bool()], protect=protect)
                    for b in range(input_ids.shape[0])]
            logits = torch.cat([o[0] for o in outs])
            states = [tuple(torch.cat([o[1][i][j] for o in outs]) for j in range(2)) for i in range(len(outs[0][1]))]
            return logits, states
        logits, _, states = self._run(input_ids, None, protect, None, want_state=True, num_last=1, want_info=False)
        return logits[:, -1], states

    @torch.no_grad()
    def step(self, token: torch.Tensor, states: list):
        return self.dense.step(token, states)

    def generate(self, input_ids: torch.Tensor, max_new_tokens: int, **kw) -> torch.Tensor:
        from ..model.generate import generate

        return generate(self, input_ids, max_new_tokens, **kw)


def from_simba_config(dense, section) -> PrunedMambaLM:
    """The pruned model described by the `simba` section of a sparsified checkpoint's config.json (a
    `format.SimbaSection`, or its dict in any layout `SimbaSection.from_dict` reads)."""
    from ..format import SimbaSection

    if not isinstance(section, SimbaSection):
        section = SimbaSection.from_dict(section)
    return PrunedMambaLM(dense, section.spec)

"""Attention injection for editing, through diffusers' attention processor interface.

Editing runs the source and the target branch in one batch laid out as blocks
``[source (B), target (B)]`` (twice under guidance: unconditional then conditional).
While a step's timestep is at or above the cut-off:

- UNet models (prompt-to-prompt): every cross-attention (and optionally self-attention)
  layer replaces the target rows' attention maps with the source rows' ones, so the target
  prompt's words are painted where the source's were. Tokens are aligned by a sequence
  alignment of the two prompts: shared and swapped words take the source word's map
  (prompt-to-prompt's *replace*), inserted words keep their own (its *refine*), so prompts
  of different lengths edit too.
- MMDiT flow transformers (SD3, FLUX; RF-Solver-Edit style): joint attention has no
  cross-attention maps, so the source rows' image keys and values are shared into the
  target rows of every attention layer (the self-attention cut-off); the target's text
  tokens keep their own, so the prompt still steers the edit. The model's own processors
  run unchanged; hooks on their ``to_k``/``to_v`` projections do the sharing.

Guide-and-Rescale reads maps instead: :func:`capturing` records the decoder's self-attention
maps with their autograd graph. Both processors run :func:`attend`, diffusers' plain attention
with the maps made explicit.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from difflib import SequenceMatcher

import torch

from inversa.models.model import Model


@dataclass
class Injector:
    """When and where to inject: timesteps ``>= cross_from`` (cross) / ``>= self_from`` (self); ``block`` = B."""

    block: int
    cross_from: float | None = None
    self_from: float | None = None
    t: float | None = None
    columns: torch.Tensor | None = None  # (groups, B, tokens): source token of each target token, -1 = own
    injected: int = 0  # attention calls whose maps (or keys/values) were replaced (for tests and reports)
    image_tokens: int | None = None  # MMDiT: image tokens, read from the last joint attention call
    blend: LocalBlend | None = None

    def active(self, is_cross: bool) -> bool:
        cut = self.cross_from if is_cross else self.self_from
        return cut is not None and self.t is not None and self.t >= cut

    def replace(self, probs: torch.Tensor, heads: int, is_cross: bool = False) -> torch.Tensor:
        """``probs`` (M * heads, Lq, Lk), batch major; copy the source rows onto the target rows.

        Cross-attention columns are taken through ``columns`` (the last groups of it: the
        conditional group comes last when guidance adds an unconditional one).
        """
        m = probs.shape[0] // heads
        if m % (2 * self.block):
            return probs
        groups = m // (2 * self.block)
        view = probs.reshape(groups, 2, self.block, heads, *probs.shape[1:]).clone()
        source = view[:, 0]
        cols = self.columns
        if is_cross and cols is not None and cols.shape[-1] == probs.shape[-1] and cols.shape[0] >= groups:
            cols = cols[-groups:, :, None, None, :].to(probs.device)
            mapped = torch.gather(source, -1, cols.clamp(min=0).expand_as(source))
            source = torch.where(cols >= 0, mapped, view[:, 1])
        view[:, 1] = source
        self.injected += 1
        return view.reshape(probs.shape)

    def share(self, features: torch.Tensor, tokens: int) -> torch.Tensor:
        """``features`` (M, L, D), batch major: the source rows' last ``tokens`` tokens onto the target rows."""
        m = features.shape[0]
        if m % (2 * self.block):
            return features
        view = features.reshape(m // (2 * self.block), 2, self.block, *features.shape[1:]).clone()
        view[:, 1, :, -tokens:] = view[:, 0, :, -tokens:]
        self.injected += 1
        return view.reshape(features.shape)


@dataclass
class LocalBlend:
    """Prompt-to-prompt's local blend: the target branch is edited only inside a mask, the source elsewhere.

    The mask is the user's (``user``, (B, 1, h, w) at latent size, 1 = edit) or, without one,
    where the blended words attend: the conditional cross-attention maps of the source
    rows' and the target rows' ``tokens``, summed over layers and steps so far, each
    rescaled to [0, 1] (minimum to maximum), their union above ``threshold``, grown by one latent pixel.
    Applied to every network input of the target rows and to the final latent.
    """

    block: int
    size: tuple[int, int]
    tokens: torch.Tensor | None = None  # (2B, L) bool: the blended words' tokens of each source and target row
    user: torch.Tensor | None = None
    threshold: float = 0.5
    maps: torch.Tensor | None = None  # (2B, h, w) attention of the blended words, accumulated

    def record(self, probs: torch.Tensor, heads: int) -> None:
        """Add one cross-attention call's maps ``(M * heads, Lq, Lk)`` (the conditional group is last)."""
        if self.tokens is None or self.user is not None or probs.shape[-1] != self.tokens.shape[-1]:
            return
        rows = 2 * self.block
        if (probs.shape[0] // heads) % rows:
            return
        last = probs.reshape(-1, rows, heads, *probs.shape[1:])[-1].float()
        words = (last * self.tokens.to(last)[:, None, None, :]).sum(-1).mean(1)  # (2B, Lq)
        h, w = self.size
        side = max(1, round((words.shape[-1] * h / w) ** 0.5))
        grid = words.reshape(rows, 1, side, words.shape[-1] // side)
        grid = torch.nn.functional.interpolate(grid, size=self.size, mode="bilinear", align_corners=False)[:, 0]
        self.maps = grid if self.maps is None else self.maps + grid

    def mask(self) -> torch.Tensor | None:
        """(B, 1, h, w) float, 1 = edited; None before any map was recorded."""
        if self.user is not None:
            return self.user
        if self.maps is None:
            return None
        low, high = self.maps.flatten(1).aminmax(dim=1)  # words attend a little everywhere: rescale to [0, 1]
        norm = (self.maps - low[:, None, None]) / (high - low).clamp_min(1e-12)[:, None, None]
        union = torch.maximum(norm[:self.block], norm[self.block:])[:, None]
        return torch.nn.functional.max_pool2d((union > self.threshold).float(), 3, 1, 1)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` with groups of ``[source (B), target (B)]`` rows: target = source outside the mask."""
        m = self.mask()
        if m is None or x.shape[0] % (2 * self.block):
            return x
        view = x.reshape(-1, 2, self.block, *x.shape[1:]).clone()
        src, tgt = view[:, 0], view[:, 1]
        view[:, 1] = src + m.to(x) * (tgt - src)
        return view.reshape(x.shape)


def text_length(model, tok) -> int:
    """The text tokens the network attends to: the family's prompt length knob (T5: PixArt), else the tokenizer's."""
    return getattr(model, "max_sequence_length", None) or tok.model_max_length


def word_tokens(model, prompts: list[str], words: list[str]) -> torch.Tensor | None:
    """(B, L) bool: the tokens of each prompt that spell its word (the word's token run, wherever it occurs)."""
    tok = getattr(getattr(model, "pipe", None), "tokenizer", None)
    if tok is None:
        return None
    ids = tok(prompts, padding="max_length", max_length=text_length(model, tok), truncation=True).input_ids
    out = torch.zeros(len(prompts), len(ids[0]), dtype=torch.bool)
    for row, (seq, word) in enumerate(zip(ids, words)):
        run = tok(word, add_special_tokens=False).input_ids
        for j in range(len(seq) - len(run) + 1):
            if run and seq[j:j + len(run)] == run:
                out[row, j:j + len(run)] = True
    return out


def align_tokens(source: list[int], target: list[int]) -> torch.Tensor:
    """For each target token, the index of its source token (-1 where the target's word is new).

    Equal runs and same-length swaps map one to one; other insertions keep their own map.
    """
    out = torch.full((len(target),), -1, dtype=torch.long)
    for op, i0, i1, j0, j1 in SequenceMatcher(None, source, target, autojunk=False).get_opcodes():
        if op == "equal" or (op == "replace" and i1 - i0 == j1 - j0):
            out[j0:j1] = torch.arange(i0, i1)
    return out


def token_columns(model, source: list[list[str]], target: list[list[str]]) -> torch.Tensor | None:
    """``(groups, B, tokens)`` alignments of each group's source and target prompts, or None without a tokenizer."""
    tok = getattr(getattr(model, "pipe", None), "tokenizer", None)
    if tok is None:
        return None

    def ids(prompts):
        return tok(prompts, padding="max_length", max_length=text_length(model, tok), truncation=True).input_ids

    return torch.stack([torch.stack([align_tokens(a, b) for a, b in zip(ids(s), ids(t))])
                        for s, t in zip(source, target)])


def attend(attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, on_probs=None):
    """Plain diffusers attention with the maps ``(B * heads, Lq, Lk)`` explicit: ``on_probs(probs, is_cross)`` may read
    or replace them."""
    residual = hidden_states
    if attn.spatial_norm is not None:
        hidden_states = attn.spatial_norm(hidden_states, temb)
    ndim = hidden_states.ndim
    if ndim == 4:
        b, c, h, w = hidden_states.shape
        hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
    is_cross = encoder_hidden_states is not None
    context = hidden_states if not is_cross else encoder_hidden_states
    if attention_mask is not None:
        attention_mask = attn.prepare_attention_mask(attention_mask, context.shape[1], context.shape[0])
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    if not is_cross:
        context = hidden_states
    elif attn.norm_cross:
        context = attn.norm_encoder_hidden_states(context)
    query = attn.head_to_batch_dim(attn.to_q(hidden_states))
    key = attn.head_to_batch_dim(attn.to_k(context))
    value = attn.head_to_batch_dim(attn.to_v(context))
    probs = attn.get_attention_scores(query, key, attention_mask)
    if on_probs is not None:
        probs = on_probs(probs, is_cross)
    out = attn.batch_to_head_dim(torch.bmm(probs, value))
    out = attn.to_out[1](attn.to_out[0](out))
    if ndim == 4:
        out = out.transpose(-1, -2).reshape(b, c, h, w)
    if attn.residual_connection:
        out = out + residual
    return out / attn.rescale_output_factor


class InjectingProcessor:
    """Plain attention that exposes the maps so the :class:`Injector` can replace them."""

    def __init__(self, injector: Injector):
        self.injector = injector

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kw):
        injector = self.injector

        def on_probs(probs, is_cross):
            if is_cross and injector.blend is not None:
                injector.blend.record(probs, attn.heads)
            return injector.replace(probs, attn.heads, is_cross) if injector.active(is_cross) else probs

        return attend(attn, hidden_states, encoder_hidden_states, attention_mask, temb, on_probs)


class CapturingProcessor:
    """Plain attention that appends its self-attention maps (autograd graph kept) to ``maps`` (Guide-and-Rescale)."""

    def __init__(self, maps: list):
        self.maps = maps

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kw):
        def on_probs(probs, is_cross):
            if not is_cross:
                self.maps.append(probs)
            return probs

        return attend(attn, hidden_states, encoder_hidden_states, attention_mask, temb, on_probs)


@contextmanager
def capturing(model, maps: list, where: str = "up_blocks"):
    """Capture the self-attention maps of the network's layers whose name starts with ``where`` (the decoder)."""
    net = model.net
    saved = net.attn_processors
    net.set_attn_processor({name: CapturingProcessor(maps) if name.startswith(where) else p for name, p in saved.items()})
    try:
        yield maps
    finally:
        net.set_attn_processor(saved)


class SharingProcessor:
    """Wraps a transformer's own attention processor: shares the source's image keys and values while active.

    Joint attention (SD3, FLUX double blocks) projects the image tokens with ``to_k``/``to_v``
    and the text tokens separately; FLUX's single blocks project ``[text, image]`` together,
    so only the last ``image_tokens`` positions (known from the joint blocks before) are shared.
    """

    def __init__(self, inner, injector: Injector):
        self.inner, self.injector = inner, injector

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, *args, **kwargs):
        injector = self.injector
        if not injector.active(is_cross=False):
            return self.inner(attn, hidden_states, encoder_hidden_states, *args, **kwargs)
        if encoder_hidden_states is not None:
            injector.image_tokens = hidden_states.shape[1]
        tokens = injector.image_tokens or hidden_states.shape[1]
        # FLUX.2's single blocks fuse q, k, v and the MLP into one projection: they keep their own keys
        hooks = [proj.register_forward_hook(lambda module, inputs, out: injector.share(out, tokens))
                 for proj in (getattr(attn, "to_k", None), getattr(attn, "to_v", None)) if proj is not None]
        try:
            return self.inner(attn, hidden_states, encoder_hidden_states, *args, **kwargs)
        finally:
            for hook in hooks:
                hook.remove()


def injection_kind(model) -> str | None:
    """``"maps"`` for UNet attention, ``"kv"`` for MMDiT joint attention (text projections), None without either."""
    net = getattr(model, "net", None)
    if getattr(model, "video", False):  # video attention (3D rope, frame tokens) takes no injected processor yet
        return None
    if net is None or not hasattr(net, "set_attn_processor") or getattr(model, "injection_refusal", None):

        return None
    joint = any(getattr(module, "add_k_proj", None) is not None for module in net.modules())
    return "kv" if joint else "maps"


@contextmanager
def injecting(model, injector: Injector):
    """Install injecting processors on the model's network for the duration of the block, then restore."""
    net = model.net
    saved = net.attn_processors
    if injection_kind(model) == "kv":
        net.set_attn_processor({name: SharingProcessor(p, injector) for name, p in saved.items()})
    else:
        net.set_attn_processor(InjectingProcessor(injector))
    try:
        yield
    finally:
        net.set_attn_processor(saved)


class Timed:
    """A view of a model that tells the injector the timestep of every network call.

    Everything but ``forward`` is the wrapped model's; guidance goes through
    :meth:`Model.predict` so that its network calls come back here.
    """

    predict = Model.predict
    predict_parts = Model.predict_parts

    def __init__(self, model, injector: Injector):
        self.__dict__["_model"], self.__dict__["_injector"] = model, injector

    def __getattr__(self, name):
        return getattr(self.__dict__["_model"], name)

    def __setattr__(self, name, value):
        setattr(self.__dict__["_model"], name, value)

    def forward(self, x, t, embeds):
        injector = self.__dict__["_injector"]
        injector.t = float(t)
        if injector.blend is not None:
            x = injector.blend.apply(x)
        return self.__dict__["_model"].forward(x, t, embeds)

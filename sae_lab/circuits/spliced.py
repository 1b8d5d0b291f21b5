"""``Spliced``: SAEs spliced into a TransformerLens 4 model at the level of their code.

At each SAE's hook the activation ``x`` (flattened to ``[b, T, d_in]``; per-head hooks such as
``blocks.L.attn.hook_z`` are ``[b, T, H, d_head]``) is replaced by ``decode(z') + e``, where
``z = encode(x)`` passes through the hook point ``<hook>.hook_sae_acts`` (giving ``z'``) and the error term
``e = x - decode(z)`` through ``<hook>.hook_sae_error``. Both are ``HookPoint``s like the model's own: read
them, cache them, edit them (``Spliced.add_hook``, ``run(fwd_hooks=..., cache=...)``). With
``error_term=False`` the model runs on the reconstruction ``decode(z')`` alone.

Inference mode is used unless ``grad=True`` is asked for; then gradients flow through the splice.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import torch
from transformer_lens.hook_points import HookPoint

from sae_lab.circuits import checks
from sae_lab.circuits.errors import CircuitError
from sae_lab.circuits.interventions import Intervention, position_mask
from sae_lab.circuits.prompts import Prompt, context_length, token_strings


def sae_key(sae) -> str:
    """The name an SAE's results are filed under (``sae.name``): its config name, else its hook name."""
    return sae.cfg.name or sae.cfg.hook_name


def _graph_node(t: torch.Tensor) -> torch.Tensor:
    """With autograd on: a fresh node of the graph (requiring grad even when nothing upstream does)."""
    if not torch.is_grad_enabled():
        return t
    t = t.clone()
    return t if t.requires_grad else t.requires_grad_(True)


class _Node:
    """The splice at one SAE's hook: the model-side hook function plus the SAE's two hook points."""

    def __init__(self, sae, error_term: bool):
        self.sae, self.error_term, self.hook = sae, error_term, sae.cfg.hook_name
        self.hp_acts, self.hp_error = HookPoint(), HookPoint()
        self.hp_acts.name, self.hp_error.name = f"{self.hook}.hook_sae_acts", f"{self.hook}.hook_sae_error"
        self.where: torch.Tensor | None = None  # bool [b, T]: splice only there (elsewhere x passes through)
        self.z: torch.Tensor | None = None  # the last forward's edited code and error term
        self.err: torch.Tensor | None = None

    def __call__(self, act: torch.Tensor, hook=None) -> torch.Tensor:
        sae = self.sae
        x = act.reshape(*act.shape[:2], -1).to(sae.W_dec.dtype)
        z = sae.encode(x)
        self.z = self.hp_acts(_graph_node(z))  # its own autograd node, so gradients can be taken at it
        out = sae.decode(self.z)
        if self.error_term:
            self.err = self.hp_error(_graph_node(x - sae.decode(z)))
            out = out + self.err
        if self.where is not None:
            out = torch.where(self.where.to(out.device)[..., None], out, x)
        return out.reshape(act.shape).to(act.dtype)


@dataclass
class SplicedOutput:
    """What ``Spliced.run`` returns. A single prompt drops the batch dimension (``[T, ...]``)."""

    token_ids: torch.Tensor
    tokens: list[str]
    logits: torch.Tensor
    features: dict[str, torch.Tensor]  # per SAE: z' [T, d_sae] (dense; .to_sparse() for a sparse view)
    errors: dict[str, torch.Tensor]  # per SAE: the error term [T, d_in] (absent with error_term=False)
    cache: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class Generation:
    """Greedy (or sampled) continuation: all token ids, the prompt's length, and the new text."""

    token_ids: list[int]
    prompt_len: int
    text: str

    def __str__(self) -> str:
        return self.text


class Handle:
    """Undo for one hook or intervention: ``.remove()``."""

    def __init__(self, hook_point: HookPoint, lens_handle):
        self._hp, self._h = hook_point, lens_handle

    def remove(self) -> None:
        if self._h in self._hp.fwd_hooks:
            self._h.hook.remove()
            self._hp.fwd_hooks.remove(self._h)


class Spliced:
    """SAEs spliced into ``model`` (a ``LoadedModel``); use as a context manager or call ``close()``.
    ``saes``: one SAE or a list of them (``[]``: no splice, e.g. to steer the plain model)."""

    def __init__(self, model, saes: Sequence = (), error_term: bool = True):
        self.model, self.error_term = model, checks.flag(error_term, "error_term")
        saes = checks.saes(saes)
        self.nodes: dict[str, _Node] = {}
        check_saes(model, saes)
        for sae in saes:
            self.nodes[sae_key(sae)] = _Node(sae, error_term)
        self._handles: list[Handle] = []
        self._strict = True
        self._attach()

    # ---- lifetime --------------------------------------------------------------------------------
    def _attach(self) -> None:
        for node in self.nodes.values():
            hp = self.model.bridge.hook_dict[node.hook]
            self._handles.append(Handle(hp, hp.add_hook(node, is_permanent=True)))

    def close(self) -> None:
        """Remove the splice and every intervention and hook added through it."""
        for h in reversed(self._handles):
            h.remove()
        self._handles.clear()

    def __enter__(self) -> "Spliced":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- hook points -----------------------------------------------------------------------------
    @property
    def hook_dict(self) -> dict[str, HookPoint]:
        """The model's hook points plus each splice's ``<hook>.hook_sae_acts`` / ``<hook>.hook_sae_error``."""
        hps = dict(self.model.bridge.hook_dict)
        for node in self.nodes.values():
            hps[node.hp_acts.name], hps[node.hp_error.name] = node.hp_acts, node.hp_error
        return hps

    def add_hook(self, name: str, fn: Callable) -> Handle:
        """Add ``fn(tensor, hook) -> tensor | None`` at hook point ``name`` until removed (or the splice closes)."""
        hps = self.hook_dict
        if not callable(fn):
            raise CircuitError(
                f"the hook at '{name}' must be a function (tensor, hook) -> tensor | None, got {type(fn).__name__}"
            )
        if name not in hps:
            raise CircuitError(
                f"unknown hook point '{name}'; spliced ones: {[n for n in hps if '.hook_sae_' in n]}, or any model hook"
            )
        handle = Handle(hps[name], hps[name].add_hook(fn, is_permanent=True))
        self._handles.append(handle)
        return handle

    def node(self, sae) -> _Node | None:
        key = sae if isinstance(sae, str) else sae_key(sae)
        node = self.nodes.get(key)
        return node if node is not None and (isinstance(sae, str) or node.sae is sae) else None

    # ---- interventions ---------------------------------------------------------------------------
    def intervene(self, *interventions: Intervention) -> Handle | list[Handle]:
        """Apply interventions to every later forward and generation; each returned handle undoes one.
        Several compose in the order added. ``steer`` on an SAE that is not spliced adds to its hook directly."""
        for i, iv in enumerate(interventions):
            if not isinstance(iv, Intervention):
                raise CircuitError(
                    f"intervene() takes Intervention objects (Intervention.zero/mean/clamp/steer), "
                    f"got {type(iv).__name__} as argument {i + 1}"
                )
        handles = [self._intervene_one(iv) for iv in interventions]
        return handles[0] if len(handles) == 1 else handles

    def _intervene_one(self, iv: Intervention) -> Handle:
        node = self.node(iv.sae)
        if node is not None:
            return self.add_hook(node.hp_acts.name, lambda z, hook: iv.edit(z, strict=self._strict))
        check_saes(self.model, [iv.sae])
        vec = iv.steering_vector()

        def add(act, hook):
            flat = act.reshape(*act.shape[:2], -1)
            mask = position_mask(iv.positions, act.shape[1], self._strict, act.device)[None, :, None]
            return (flat + mask * vec.to(flat)).reshape(act.shape)

        return self.add_hook(iv.sae.cfg.hook_name, add)

    # ---- running ---------------------------------------------------------------------------------
    def ids(
        self, prompt: Prompt | torch.Tensor, batch: bool = False, name: str = "prompt"
    ) -> tuple[torch.Tensor, bool]:
        """Checked ``[b, T]`` ids (``checks.prompt_ids``; b > 1 only with ``batch=True``) and whether the prompt
        was a single sequence (text, a list of ids or a 1-D tensor) rather than 2-D ids."""
        return checks.prompt_ids(self.model, prompt, name, batch), not checks.is_batch_shaped(prompt)

    def run(
        self,
        prompt: Prompt | torch.Tensor,
        fwd_hooks: Iterable[tuple[str, Callable]] = (),
        cache: Iterable[str] | bool = False,
        grad: bool = False,
        where: torch.Tensor | None = None,
    ) -> SplicedOutput:
        """One forward pass: logits, each SAE's code and error term, and ``cache`` (hook names, or True for
        every spliced hook point). ``fwd_hooks`` apply to this pass only. ``where`` (bool ``[b, T]``) limits
        the splice to those positions. ``grad=True`` keeps the autograd graph (no inference mode).

        The one function that takes a batch: ``prompt`` is text, token ids (list or 1-D tensor: the outputs drop
        the batch dimension), or a ``[b, T]`` tensor of ids (every row runs; the outputs keep ``[b, ...]``)."""
        ids, single = self.ids(prompt, batch=True)
        grad = checks.flag(grad, "grad")
        names = self._cache_names(cache)
        store: dict[str, torch.Tensor] = {}
        mode = contextlib.nullcontext() if grad else torch.inference_mode()
        with mode, self._temporary(fwd_hooks, names, store), self._where(where, ids):
            logits = self.model.bridge(ids)
        sq = (lambda t: t[0]) if single else (lambda t: t)
        feats = {k: sq(n.z) for k, n in self.nodes.items() if n.z is not None}
        errs = {k: sq(n.err) for k, n in self.nodes.items() if n.err is not None and n.error_term}
        return SplicedOutput(
            sq(ids),
            token_strings(self.model, ids[0]) if single else [],
            sq(logits),
            feats,
            errs,
            {k: sq(v) for k, v in store.items()},
        )

    def _cache_names(self, cache) -> list[str]:
        if cache is True:
            return [n for node in self.nodes.values() for n in (node.hp_acts.name, node.hp_error.name)]
        names = [cache] if isinstance(cache, str) else list(cache or [])
        unknown = [n for n in names if n not in self.hook_dict]
        if unknown:
            raise CircuitError(f"cannot cache unknown hook point(s) {unknown}")
        return names

    @contextlib.contextmanager
    def _temporary(self, fwd_hooks, cache_names: list[str], store: dict):
        def saver(name):  # by the requested name: model hook names may be aliases (resid_post = hook_out)
            return lambda t, hook: store.__setitem__(name, t)

        temp = [self.add_hook(name, fn) for name, fn in fwd_hooks]
        temp += [self.add_hook(name, saver(name)) for name in cache_names]
        try:
            yield
        finally:
            for h in temp:
                h.remove()
                self._handles.remove(h)

    @contextlib.contextmanager
    def _where(self, where: torch.Tensor | None, ids: torch.Tensor):
        if where is not None and not (isinstance(where, torch.Tensor) and where.dtype == torch.bool):
            raise CircuitError(
                f"where must be a bool tensor of shape {tuple(ids.shape)} (True = splice there), got "
                f"{type(where).__name__} {getattr(where, 'dtype', '')}"
            )
        if where is not None and tuple(where.shape) != tuple(ids.shape):
            raise CircuitError(f"where has shape {tuple(where.shape)}; it must match the tokens {tuple(ids.shape)}")
        for node in self.nodes.values():
            node.where, node.z, node.err = where, None, None
        try:
            yield
        finally:
            for node in self.nodes.values():
                node.where = None

    @torch.inference_mode()
    def generate(
        self, prompt: Prompt, max_new_tokens: int = 20, temperature: float = 0.0, seed: int | None = None
    ) -> Generation:
        """Continue one ``prompt`` (text, token ids, or a ``[1, T]`` tensor; a batch is refused) token by token with
        the splice and interventions active (greedy at temperature 0). Every step reruns the whole sequence, so
        positions index the prompt + the new tokens (see ``interventions``); a position beyond the prompt applies
        once that token exists."""
        ids, _ = self.ids(prompt)
        max_new_tokens = checks.count(max_new_tokens, "max_new_tokens", minimum=0)
        temperature = checks.number(temperature, "temperature", minimum=0.0)
        seed = None if seed is None else checks.count(seed, "seed", minimum=0)
        n_ctx, start = context_length(self.model), ids.shape[1]
        if start + max_new_tokens > n_ctx:
            raise CircuitError(
                f"prompt ({start} tokens) + max_new_tokens ({max_new_tokens}) exceeds the model's "
                f"context of {n_ctx} tokens"
            )
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        eos = self.model.tokenizer.eos_token_id
        self._strict = False
        try:
            for _ in range(max_new_tokens):
                logits = self.model.bridge(ids)[0, -1].float()
                if temperature > 0:
                    probs = torch.softmax(logits / temperature, -1).cpu()
                    nxt = int(torch.multinomial(probs, 1, generator=gen))
                else:
                    nxt = int(logits.argmax())
                ids = torch.cat([ids, torch.tensor([[nxt]], device=ids.device)], dim=1)
                if nxt == eos:
                    break
        finally:
            self._strict = True
        new = ids[0, start:].tolist()
        return Generation(ids[0].tolist(), start, self.model.tokenizer.decode(new))

    def attribute(
        self, clean: Prompt, corrupt: Prompt, metric, method: str = "atp", steps: int = 10, per_position: bool = True
    ):
        """Attribution patching (Marks et al.): see ``sae_lab.circuits.attribution.attribute``."""
        from sae_lab.circuits.attribution import attribute

        return attribute(self, clean, corrupt, metric, method=method, steps=steps, per_position=per_position)


# ---- checks ------------------------------------------------------------------------------------------
def hook_widths(model, hooks: list[str]) -> dict[str, int]:
    """The flattened activation width at each hook (one short forward that stops after the deepest)."""
    from sae_lab.activations.hooks import stop_layer

    bos = model.tokenizer.bos_token_id
    ids = torch.tensor([[bos if bos is not None else 0]], device=model.device)
    with torch.inference_mode():
        _, cache = model.bridge.run_with_cache(ids, names_filter=hooks, stop_at_layer=stop_layer(hooks))
    return {h: int(cache[h][0, 0].numel()) for h in hooks}


def check_saes(model, saes: Sequence) -> None:
    """CircuitError if an SAE's hook is not a model hook, its d_in differs from the hook's width, or two
    SAEs share a name or a hook."""
    from sae_lab.activations.hooks import HookNameError, validate_hooks

    if not saes:
        return
    hooks = [s.cfg.hook_name for s in saes]
    try:
        validate_hooks(hooks, model.hook_names)
    except HookNameError as e:
        raise CircuitError(f"an SAE does not fit the model {model.name}: {e}") from None
    keys = [sae_key(s) for s in saes]
    if len(set(keys)) != len(keys):
        raise CircuitError(f"SAE names {keys} repeat; give each SAE a distinct cfg.name")
    widths = hook_widths(model, hooks)
    for sae in saes:
        if sae.cfg.d_in != widths[sae.cfg.hook_name]:
            raise CircuitError(
                f"the SAE '{sae_key(sae)}' has d_in={sae.cfg.d_in}, but the model's "
                f"{sae.cfg.hook_name} has width {widths[sae.cfg.hook_name]}; use an SAE trained on "
                f"this model and hook"
            )

"""BaseSAE: everything the architectures share (parameters, pre-bias, decoder norm, statistics, fold scale).

Parameters use SAELens naming: ``W_enc [d_in, d_sae]``, ``b_enc [d_sae]``, ``W_dec [d_sae, d_in]`` (unit-norm
rows), ``b_dec [d_in]``. ``W_enc`` is stored as the transpose of a contiguous ``[d_sae, d_in]`` tensor, so that
the sparse backward writes its gradient row by row (``W_enc.t()`` is contiguous).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from sae_lab.configbase import ConfigError, build_config
from sae_lab.distributed import all_sum, global_rows
from sae_lab.saes import registry
from sae_lab.saes.aux import revival_losses
from sae_lab.saes.config import SAEConfig
from sae_lab.saes.sparse_ops import gather_preacts, sparse_decode


@dataclass
class TrainOutput:
    """What ``training_forward`` returns to the trainer."""

    x_hat: torch.Tensor
    aux_losses: dict[str, torch.Tensor] = field(default_factory=dict)
    fired: torch.Tensor | None = None
    l0: float = 0.0


class BaseSAE(nn.Module):
    """Shared SAE behaviour; subclasses implement ``encode``, ``training_forward`` (+ their aux loss)."""

    architecture: str = "base"  # set by @register
    config_class: type[SAEConfig] = SAEConfig  # each architecture names its own config class
    has_encoder: bool = True  # False for matching pursuit (its encoder is W_dec itself)
    auto_lr_scale: float = 1.0  # `train.lr: auto` multiplier (sae_lab.training.config.auto_lr)
    auto_encoder_eps_ratio: float = 0.0  # `train.encoder_eps_ratio: auto` (sae_lab.training.optim, relative eps)
    has_thresholds: bool = False  # True for SAEs whose inference thresholds are calibrated (threshold_calibrator)
    activation_buffers: tuple[str, ...] = ()  # buffers in activation units: divided by s when folding
    saelens_loads: tuple[str, ...] = ()  # SAELens architectures this class loads (see from_saelens)

    def __init__(self, cfg: SAEConfig):
        if cfg.d_in is None or cfg.d_sae is None:
            raise ConfigError(f"SAE '{cfg.name}' needs d_in (and d_sae or expansion_factor) to be built")
        super().__init__()
        self.cfg = cfg
        d_in, d_sae = cfg.d_in, cfg.d_sae
        W_dec = torch.randn(d_sae, d_in)
        W_dec /= W_dec.norm(dim=1, keepdim=True)
        self.W_dec = nn.Parameter(W_dec)
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        if self.has_encoder:
            self.W_enc = nn.Parameter(W_dec.clone().t())  # tied init: W_enc = W_dec^T
            self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.register_buffer("tokens_since_fired", torch.zeros(d_sae, dtype=torch.long))
        self.register_buffer("density_ema", torch.zeros(d_sae))
        self.register_buffer("stats_started", torch.zeros((), dtype=torch.bool))

    @property
    def name(self) -> str:
        """The SAE's label: ``cfg.name``, else its hook name (the key of its results in the circuit API)."""
        return self.cfg.name or self.cfg.hook_name

    # ---- the contract ---------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Dense code ``[..., d_sae]`` by the inference rule."""
        raise NotImplementedError

    def training_forward(self, x: torch.Tensor) -> TrainOutput:
        """Training rule on a ``[B, d_in]`` batch; updates running statistics under no_grad."""
        raise NotImplementedError

    @property
    def needs_gradients(self) -> bool:
        """True when the training rule needs ∂loss/∂x at every row (g-SAE): the trainer then calls
        ``training_forward(x, grad=...)`` with the batch's gradients (see sae_lab/activations/batch.py)."""
        return False

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z.to(self.W_dec.dtype) @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """(x - b_dec) @ W_enc + b_enc."""
        return torch.nn.functional.linear(x - self.b_dec, self.W_enc.t(), self.b_enc)

    def pre_acts_by_latent(self, x: torch.Tensor) -> torch.Tensor:
        """The pre-activations of a ``[B, d_in]`` batch as a transposed view of a contiguous ``[d_sae, B]``
        matrix (same values as ``pre_acts``): each latent's column is contiguous, which makes per-latent
        selections over the batch (Feature Choice) several times faster than on the token-major layout."""
        return torch.addmm(self.b_enc.unsqueeze(1), self.W_enc.t(), (x - self.b_dec).t()).t()

    def threshold_calibrator(self, batch_size: int, n_batches: int):
        """An object with ``add(x)`` per batch and ``finish() -> dict`` that sets the inference thresholds
        from ``n_batches`` batches (see calibration.py), or None for SAEs without thresholds (the default; a class
        that returns one sets ``has_thresholds``)."""
        return None

    def check_batch_size(self, batch_size: int) -> None:
        """Raise ConfigError if training batches of this size cannot meet the SAE's rules."""
        self.cfg.check_batch_size(batch_size)

    # ---- SAELens mapping (each architecture overrides what applies to it) --------------------------
    @classmethod
    def saelens_architecture(cls, cfg: SAEConfig) -> str | None:
        """The SAELens architecture that computes exactly this SAE's inference rule, or None."""
        return None

    @classmethod
    def saelens_fields(cls, cfg: SAEConfig) -> dict:
        """Architecture-specific fields of cfg.json (e.g. TopK's k), on top of the common ones."""
        return {}

    @classmethod
    def saelens_unmapped_note(cls, cfg: SAEConfig) -> str:
        """Why SAELens cannot load this SAE (written to sae_lab.json when saelens_architecture is None)."""
        return f"SAELens has no architecture computing this '{cls.architecture}' SAE's rule: SAELens cannot load it."

    @classmethod
    def from_saelens(cls, cfg_json: dict, weights: dict[str, torch.Tensor], fields: dict) -> "BaseSAE":
        """An SAE equal to a SAELens one (``saelens_loads``) from its cfg.json, float32 weights and the common
        fields (d_in, d_sae, hook_name, name)."""
        raise NotImplementedError(f"'{cls.architecture}' loads no SAELens architecture")

    def sparse_training_forward(
        self, x: torch.Tensor, pre: torch.Tensor, code, values: torch.Tensor, counted: torch.Tensor | None = None
    ) -> TrainOutput:
        """Shared training step of encoder SAEs once the rule chose ``code`` (values = pre at its entries).
        ``counted`` (bool per entry, default all) marks the entries that count as firing in the dead-latent
        statistics; revival entries do not, so a latent stays dead until it wins by the rule itself."""
        acts = torch.relu(gather_preacts(x, self.b_dec, self.W_enc.t(), self.b_enc, code, values))
        x_hat = sparse_decode(acts, self.W_dec, code) + self.b_dec
        aux = revival_losses(self, x, x_hat, pre)  # uses the statistics of previous batches
        with torch.no_grad():
            live = acts > 0
            fired = torch.bincount(code.cols[live if counted is None else live & counted], minlength=self.cfg.d_sae)
            self.update_stats(fired, x.shape[0])
        return TrainOutput(x_hat, aux, fired, float(live.sum()) / x.shape[0])

    # ---- decoder geometry -----------------------------------------------------------------------
    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Set every decoder row to unit norm (call after each optimiser step)."""
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8))

    @torch.no_grad()
    def remove_parallel_grads(self) -> None:
        """Project out of W_dec.grad the component along each (unit-norm) decoder row."""
        g = self.W_dec.grad
        if g is not None:
            g.addcmul_(torch.linalg.vecdot(g, self.W_dec).unsqueeze(1), self.W_dec, value=-1)

    @torch.no_grad()
    def init_b_dec(self, sample: torch.Tensor, method: str = "geometric_median") -> None:
        """Initialise b_dec from ``sample [N, d_in]``: 'geometric_median' (Weiszfeld), 'mean' or 'zeros'."""
        if method == "geometric_median":
            value = geometric_median(sample.to(self.b_dec))
        elif method == "mean":
            value = sample.to(self.b_dec).mean(0)
        elif method == "zeros":
            value = torch.zeros_like(self.b_dec)
        else:
            raise ConfigError(f"b_dec init method '{method}' is unknown; allowed: geometric_median, mean, zeros")
        self.b_dec.copy_(value)

    # ---- running statistics ---------------------------------------------------------------------
    @torch.no_grad()
    def update_stats(self, fired: torch.Tensor, n_tokens: int) -> None:
        """Dead counters (in tokens) and the density EMA, from this batch's firing counts. In data-parallel
        training ``fired`` (this rank's counts) is summed over ranks in place and ``n_tokens`` is the global batch."""
        all_sum(fired)
        n_tokens = global_rows(n_tokens)
        self.tokens_since_fired.add_(n_tokens)
        self.tokens_since_fired[fired > 0] = 0
        density = fired.to(self.density_ema.dtype) / max(n_tokens, 1)
        if bool(self.stats_started):
            self.density_ema.lerp_(density, self.cfg.density_momentum)
        else:
            self.density_ema.copy_(density)
            self.stats_started.fill_(True)

    def dead_mask(self) -> torch.Tensor:
        """bool[d_sae]: latents that have not fired in the last ``cfg.dead_tokens`` tokens."""
        return self.tokens_since_fired >= self.cfg.dead_window

    # ---- fold scale (saving: sae_lab.saedir.SAEDir) ------------------------------------------------
    def folded_tensors(self, scale: float) -> tuple[dict[str, torch.Tensor], SAEConfig]:
        """Parameters/buffers and config of the SAE that applies to raw x when training saw ``scale * x``.

        With x' = s x: pre' = (x' - b_dec) W_enc + b_enc = s [(x - b_dec/s) W_enc + b_enc/s], so every
        quantity in activation units (b_dec, b_enc, thresholds, codes) is divided by s while W_enc and the
        unit-norm W_dec are unchanged; then x_hat_raw = z' W_dec / s + b_dec / s = x_hat' / s exactly.
        """
        if not scale > 0:
            raise ValueError(f"fold_scale must be > 0, got {scale}")
        state = {k: v.detach().clone() for k, v in self.state_dict().items()}
        for name in ("b_dec", "b_enc", *self.activation_buffers):
            if name in state:
                state[name] = state[name] / scale
        return state, self.folded_config(scale)

    def folded_config(self, scale: float) -> SAEConfig:
        """Config values in activation units divided by ``scale`` (none in the base)."""
        return self.cfg.model_copy()


def build_sae(cfg: SAEConfig | dict) -> BaseSAE:
    """A freshly initialised SAE for ``cfg`` (an SAE config, or a plain dict validated into one)."""
    if isinstance(cfg, dict):
        cfg = build_config(SAEConfig, cfg, "sae config")
    return registry.get_sae_class(cfg.architecture)(cfg)


@torch.no_grad()
def geometric_median(points: torch.Tensor, iters: int = 100, tol: float = 1e-6) -> torch.Tensor:
    """Weiszfeld's algorithm: the point minimising the sum of Euclidean distances to ``points [N, d]``."""
    y = points.mean(0)
    for _ in range(iters):
        w = 1.0 / (points - y).norm(dim=1).clamp_min(1e-8)
        y_new = (w[:, None] * points).sum(0) / w.sum()
        if (y_new - y).norm() <= tol * y.norm().clamp_min(1e-8):
            return y_new
        y = y_new
    return y

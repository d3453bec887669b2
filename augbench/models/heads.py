"""MLP heads built from a list of layer specs; projector and predictor presets are data over it."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, None: None}


@dataclass(frozen=True)
class LayerSpec:
    """One Linear layer, then optional BatchNorm1d and activation. `bn_affine=False` is SimSiam's output BN."""

    width: int
    bn: bool = False
    activation: str | None = None
    bn_affine: bool = True


class MLP(nn.Sequential):
    """Linear layers from `specs`; a Linear followed by BN has no bias (the BN shift replaces it)."""

    def __init__(self, in_dim: int, specs: list[LayerSpec]):
        layers: list[nn.Module] = []
        for spec in specs:
            if spec.activation not in ACTIVATIONS:
                raise ValueError(f"activation {spec.activation!r} is unknown; known: {list(ACTIVATIONS)}")
            layers.append(nn.Linear(in_dim, spec.width, bias=not spec.bn))
            if spec.bn:
                layers.append(nn.BatchNorm1d(spec.width, affine=spec.bn_affine))
            if spec.activation:
                layers.append(ACTIVATIONS[spec.activation]())
            in_dim = spec.width
        super().__init__(*layers)
        self.out_dim = in_dim

    def forward(self, features: Tensor) -> Tensor:  # (B, in_dim) → (B, out_dim)
        return super().forward(features)


@dataclass
class ProjectorConfig:
    """`num_layers` Linear layers: hidden ones of `hidden_dim` with ReLU (and BN if `bn`), then `out_dim`, with a BN
    of its own if `last_bn`: without scale and shift as SimSiam's code, or with them if `last_bn_affine`, as HAI's
    official SimSiam projector."""

    num_layers: int = 2
    hidden_dim: int = 2048
    out_dim: int = 128
    bn: bool = False
    last_bn: bool = False
    last_bn_affine: bool = False

    def __post_init__(self):
        if self.num_layers < 1:
            raise ValueError(f"num_layers={self.num_layers}: a projector needs at least one layer")
        if self.last_bn_affine and not self.last_bn:
            raise ValueError("last_bn_affine=true: there is no output BN to make affine; set last_bn=true")

    def specs(self) -> list[LayerSpec]:
        hidden = [LayerSpec(self.hidden_dim, bn=self.bn, activation="relu")] * (self.num_layers - 1)
        return hidden + [LayerSpec(self.out_dim, bn=self.last_bn, bn_affine=self.last_bn_affine)]


@dataclass
class PredictorConfig:
    """BYOL/SimSiam predictor: out_dim → hidden_dim (BN, ReLU) → out_dim. Off unless `enabled`."""

    enabled: bool = False
    hidden_dim: int = 4096
    bn: bool = True

    def specs(self, out_dim: int) -> list[LayerSpec]:
        return [LayerSpec(self.hidden_dim, bn=self.bn, activation="relu"), LayerSpec(out_dim)]

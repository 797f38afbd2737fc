"""Declarative layer specs: a model's structure as data, so that models are saved and rebuilt
without unpickling code, and decomposed components can be described layer by layer."""

from __future__ import annotations

from torch import nn

# Layer types a spec may name, with the constructor arguments read back from a built module.
SUPPORTED_LAYERS: dict[str, tuple[type[nn.Module], tuple[str, ...]]] = {
    "Linear": (nn.Linear, ("in_features", "out_features")),
    "BatchNorm1d": (nn.BatchNorm1d, ("num_features", "eps", "momentum")),
    "LayerNorm": (nn.LayerNorm, ("normalized_shape", "eps")),
    "Dropout": (nn.Dropout, ("p",)),
    "ReLU": (nn.ReLU, ()),
    "LeakyReLU": (nn.LeakyReLU, ("negative_slope",)),
    "GELU": (nn.GELU, ()),
    "SiLU": (nn.SiLU, ()),
    "Tanh": (nn.Tanh, ()),
    "Sigmoid": (nn.Sigmoid, ()),
}


def build_layer(spec: dict) -> nn.Module:
    """``{"type": "Linear", "in_features": 8, "out_features": 4}`` -> ``nn.Linear(8, 4)``."""
    layer_type = spec.get("type")
    if layer_type not in SUPPORTED_LAYERS:
        raise ValueError(f"Unsupported layer type {layer_type!r}; supported: {sorted(SUPPORTED_LAYERS)}")
    constructor, _ = SUPPORTED_LAYERS[layer_type]
    return constructor(**{key: value for key, value in spec.items() if key != "type"})


def check_layer_chain(layers: list[dict], input_width: int, output_width: int, model: str) -> None:
    """Each layer reads the width the one before it writes: ``input_width`` into the first, and the last
    writes ``output_width``. A spec written by hand that breaks the chain would load (its weights match
    the spec) and fail only at the first forward pass, far from the file at fault."""
    width = input_width
    for index, layer in enumerate(layers):
        layer_type = layer.get("type")
        reads = {"Linear": "in_features", "BatchNorm1d": "num_features", "LayerNorm": "normalized_shape"}.get(layer_type)
        if reads is not None:
            if layer.get(reads) not in (width, [width]):  # LayerNorm's shape is a list in a saved spec
                raise ValueError(
                    f"{model}: layer {index} ({layer_type}) has {reads}={layer.get(reads)!r} but the layer before "
                    f"it outputs width {width}"
                )
        if layer_type == "Linear":
            width = layer.get("out_features")
    if width != output_width:
        raise ValueError(f"{model}: the last layer outputs width {width} but the head reads {output_width}")


def layer_spec(module: nn.Module) -> dict:
    """The inverse of :func:`build_layer` for a built module."""
    layer_type = type(module).__name__
    if layer_type not in SUPPORTED_LAYERS:
        raise ValueError(f"Layer {module!r} has no declarative spec; supported: {sorted(SUPPORTED_LAYERS)}")
    _, arguments = SUPPORTED_LAYERS[layer_type]
    spec = {"type": layer_type}
    for argument in arguments:
        value = getattr(module, argument)
        spec[argument] = list(value) if isinstance(value, tuple) else value
    return spec


def mlp_layer_specs(
    input_dim: int,
    hidden_dims: list[int],
    dropout: float = 0.0,
    batch_norm: bool = True,
    activation: str = "ReLU",
) -> list[dict]:
    """Blocks of Linear -> [BatchNorm1d] -> activation -> [Dropout], one per hidden width."""
    specs: list[dict] = []
    width = input_dim
    for hidden in hidden_dims:
        specs.append({"type": "Linear", "in_features": width, "out_features": int(hidden)})
        if batch_norm:
            specs.append({"type": "BatchNorm1d", "num_features": int(hidden)})
        specs.append({"type": activation})
        if dropout:
            specs.append({"type": "Dropout", "p": float(dropout)})
        width = int(hidden)
    return specs

"""Models as plain payloads (specs, numbers and tensors), so files load with ``weights_only=True``."""

from __future__ import annotations

from emm.models import decomposition, emm, mlp
from emm.models.baselines import BASELINES

BUILDERS = {
    mlp.KIND: mlp.SingleTaskMLP.from_payload,
    decomposition.KIND: decomposition.Decomposition.from_payload,
    emm.KIND: emm.EMM.from_payload,
    **{kind: model.from_payload for kind, model in BASELINES.items()},
}


def from_payload(payload: dict, source: str = "payload"):
    kind = payload.get("kind") if isinstance(payload, dict) else None
    if kind not in BUILDERS:
        raise ValueError(f"{source}: unknown model kind {kind!r}; expected one of {sorted(BUILDERS)}")
    return BUILDERS[kind](payload)

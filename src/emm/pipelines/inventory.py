"""Every model a dataset's run produces, with its role and the catalog entries that hold it.

Pipelines are built from parameters (``pipeline_registry``): the pool, baseline and ablation entries a
dataset declares decide which nodes exist and which models the evaluation and the reports read.
"""

from __future__ import annotations

from typing import NamedTuple

POOL, EMM, BASELINE, ABLATION = "pool", "emm", "baseline", "ablation"


class ModelEntry(NamedTuple):
    role: str  # one of POOL, EMM, BASELINE, ABLATION
    dataset: str  # the catalog entry of the trained model (inside the dataset's namespace)
    training_report: str | None  # the catalog entry of its training report; None for a pretrained model
    label: str  # how tables name it


def model_inventory(
    pool_models: dict[str, dict] | None = None,
    baseline_models: dict[str, dict] | None = None,
    ablations: dict[str, dict] | None = None,
    refine: dict | None = None,
) -> dict[str, ModelEntry]:
    """Model name -> entry, in the order tables list them: pool, baselines, ablations, EMM, then EMM+ where
    the dataset declares ``refine``."""
    inventory: dict[str, ModelEntry] = {}

    def add(name: str, entry: ModelEntry) -> None:
        if name in inventory:
            raise ValueError(
                f"Two models are named {name!r} ({inventory[name].role} and {entry.role}); "
                "pool models, baselines and ablations need distinct names"
            )
        inventory[name] = entry

    for name, params in (pool_models or {}).items():
        report = None if params.get("pretrained", False) else f"pool_training_{name}"
        add(name, ModelEntry(POOL, f"pool_model_{name}", report, name))
    for name in baseline_models or {}:
        add(name, ModelEntry(BASELINE, f"baseline_{name}", f"baseline_training_{name}", name))
    for name, params in (ablations or {}).items():
        add(f"ablation_{name}", ModelEntry(ABLATION, f"ablation_{name}", f"ablation_training_{name}", params.get("label", name)))
    add("emm", ModelEntry(EMM, "emm_model", "emm_training", "EMM"))
    if refine:
        add("emm_plus", ModelEntry(EMM, "emm_plus_model", "emm_plus_training", "EMM+"))
    return inventory

from __future__ import annotations

import logging

from emm.models.decomposition import Decomposition, decompose
from emm.models.mlp import SingleTaskMLP

logger = logging.getLogger(__name__)


def decompose_pool(decompose_params: dict, **pool_models: SingleTaskMLP) -> tuple[Decomposition, dict]:
    """Returns the components and a report of every model's layers, signatures and cuts."""
    decomposition = decompose(pool_models, max_levels=decompose_params["max_levels"])
    logger.info(
        "Decomposed %d models into %d levels of widths %s",
        len(pool_models),
        len(decomposition.levels),
        decomposition.level_dims,
    )
    return decomposition, decomposition.report

"""The project's modular pipelines, one package per stage."""

from functools import partial, update_wrapper


def bind(function, **values):
    """``function`` with ``values`` fixed, keeping its name and docstring: node functions that differ per
    node (a model's name, its role table) but take their data from the catalog."""
    return update_wrapper(partial(function, **values), function)

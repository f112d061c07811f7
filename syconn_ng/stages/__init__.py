"""The pipeline's stages, in order; each is registered here as ``name: "module:attribute"``.

A stage object follows `syconn_ng.engine.driver.Stage`. Stages are imported only when run.
"""

from __future__ import annotations

import importlib

from syconn_ng.errors import SyconnError

PIPELINE = ("barrier", "organelles", "myelin_syntype", "objects", "hulls", "mapping", "compartments", "synapses", "celltypes", "connectome", "scales")

STAGES: dict[str, str] = {
    "barrier": "syconn_ng.stages.cnn:BARRIER",
    "organelles": "syconn_ng.stages.cnn:ORGANELLES",
    "myelin_syntype": "syconn_ng.stages.cnn:MYELIN_SYNTYPE",
    "objects": "syconn_ng.stages.objects:STAGE",
    "hulls": "syconn_ng.stages.hulls:STAGE",
    "mapping": "syconn_ng.stages.mapping:STAGE",
    "compartments": "syconn_ng.stages.compartments:STAGE",
    "synapses": "syconn_ng.stages.synapses:STAGE",
    "connectome": "syconn_ng.stages.connectome:STAGE",
    "celltypes": "syconn_ng.stages.celltypes:STAGE",
    "scales": "syconn_ng.downsample:STAGE",
}


def available() -> list[str]:
    """The registered stages, in pipeline order."""
    return [name for name in PIPELINE if name in STAGES]


def get_stage(name: str):
    """The stage object registered as `name`."""
    if name not in STAGES:
        known = ", ".join(available())
        raise SyconnError(f"unknown or not yet available stage {name!r} (available: {known})")
    module, attr = STAGES[name].split(":")
    return getattr(importlib.import_module(module), attr)

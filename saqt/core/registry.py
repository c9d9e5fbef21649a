"""Named implementations, one style for all: a registry is a table of name -> ``"module:attribute"``, declared in
a light module where the names are needed (a config's checks, a help text) and imported only when one is used, so
that offering the choices never imports a heavy library. The encoders (``saqt.label.encoders.base.FACTORIES``), the
synth bank's metrics (``saqt.label.stage_configs.SYNTH_METRICS``), glint's local backbones
(``glint.architecture.LOCAL_BACKBONES``) and the fetched datasets' label converters (``saqt.fetch.archives.PREPARE``) are
such tables.

The two other tables are data, not code: the distortion renderers, registered by type id where each is defined
(``saqt.build.distortions.registry``, checked against the YAML catalogue), and the YAML catalogues themselves
(``saqt.core.yaml_manifests``).
"""

from __future__ import annotations

import importlib
from typing import Any


def resolve(target: str) -> Any:
    """The object ``"package.module:attribute"`` names, its module imported now."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)

"""Inference bundles: export a trained run, verify and load it (see docs/export.md)."""

from omni_img.export.bundle import (
    Bundle,
    export_bundle,
    load_bundle,
    pipeline_from_workdirs,
    verify_bundle,
)

__all__ = ["Bundle", "export_bundle", "load_bundle", "pipeline_from_workdirs", "verify_bundle"]

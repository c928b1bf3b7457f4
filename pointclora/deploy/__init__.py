"""Deployment: export a (merged) model end to end from raw points to ONNX / TorchScript (:mod:`.export`)."""

from .export import FORMATS, ExportableModel, export_model, prepare_for_export

__all__ = ["FORMATS", "ExportableModel", "export_model", "prepare_for_export"]

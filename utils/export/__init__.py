"""Deployment formats written from a trained checkpoint (ONNX today)."""

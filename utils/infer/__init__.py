"""Inference: the Predictor (letterbox -> model -> decode -> NMS -> un-letterbox) that predict.py, get_map.py,
training-time evaluation and the Python API share; the predict loop over files and videos; test-time augmentation."""

"""Evaluation: COCO and VOC metrics in torch (agreeing with pycocotools), scoring a model or a detections file,
the detection confusion matrix, and the reports get_map.py writes."""

"""Everything around the model (nets/), one folder per concept, imported only downwards:

    ablation, api  ->  engine  ->  eval  ->  infer, export  ->  data, viz, config, device  ->  nets

tests/test_layout.py holds these floors and fails on an upward import or a cycle.
"""

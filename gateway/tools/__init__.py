"""Operator tools beside the gateway: the demo, hit-quality evaluation, threshold tuning and
trace replay."""

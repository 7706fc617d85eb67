"""Networks (built by architecture name from plans.json), checkpoints and the compute device.

Used by training and inference; uses only the base (plans schema, work folder, utils).
"""

"""Postprocessing of predicted label maps (used by inference and by model selection in evaluation)."""

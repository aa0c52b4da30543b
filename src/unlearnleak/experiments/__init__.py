"""Experiment configuration (pydantic + YAML + --set overrides)."""

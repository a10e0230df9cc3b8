"""Figures for the UI's metadata panel: pure numpy in, PNG bytes out; no Dagster."""

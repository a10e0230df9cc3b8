"""Figures for the UI's metadata panel: numpy in, captioned matplotlib figures and PNGs out; no Dagster."""

"""Faces from new footage: detector and landmark plugins, alignment, aligned-face output."""

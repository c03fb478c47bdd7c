"""The dataset: its folder layout, the real download, the synthetic phantoms, scanning, the split, decoded images
and masks.
"""

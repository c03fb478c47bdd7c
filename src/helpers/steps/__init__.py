"""A notebook's work in one call each: training a classifier (03, 04), the lung U-Net (02), the other heatmap
methods and metrics (08).
"""

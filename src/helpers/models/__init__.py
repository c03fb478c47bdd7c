"""The networks and their training: the classifiers, the training loop, the lung U-Net, classification metrics."""

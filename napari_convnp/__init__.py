"""napari-convnp: fill the gaps of Landsat 7 scenes with a ConvNP and show its mean and variance."""
__version__ = "0.1.0"

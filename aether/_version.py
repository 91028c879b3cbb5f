"""The package version: a floor module, so that the engine records it without importing the package face."""

__version__ = "0.1.0"

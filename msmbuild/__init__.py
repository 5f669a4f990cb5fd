"""msmbuild: the build system for Model Spec Midtraining experiments."""

__version__ = "0.1.0"
__all__ = ["__version__"]

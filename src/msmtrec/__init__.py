"""msmtrec: multi-scenario, multi-task prediction for e-commerce."""

__version__ = "0.1.0"

"""Project tools for Prometheus: the thresholds reader and the alert rules generator.

Not part of the exporter (nothing under exporter/ imports it, and it is not installed); run its
modules from the repository root, e.g. `python -m prometheus.generate_alerts`.
"""

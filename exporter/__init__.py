"""device-cloud-exporter: Prometheus metrics from the ParqEx and LaMetric cloud APIs."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("device-cloud-exporter")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

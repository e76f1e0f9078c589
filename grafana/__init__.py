"""Project tools for Grafana: the dashboard generator, one module per dashboard row.

Not part of the exporter; run from the repository root: `python -m grafana.generate_dashboard`.
"""

"""The dashboard's rows, one module each; grafana/generate_dashboard.py sets their order."""

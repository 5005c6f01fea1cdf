"""The dashboard's views: Streamlit rendering over frames from dashboard.data (no MLflow calls
of their own; app.py hands them cached loaders)."""

"""The dashboard's views: Streamlit rendering over the results layer's frames (dashboard.data; no MLflow calls
of their own; app.py hands them cached loaders)."""

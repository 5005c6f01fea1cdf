"""The Streamlit leaderboard over MLflow (reads MLflow only; never the training code).

    harness leaderboard --tracking-uri URI      # = streamlit run dashboard/app.py -- --tracking-uri URI

dashboard.data turns MLflow runs into pandas frames, dashboard.views renders them,
dashboard.paper holds the paper's headline numbers, dashboard.launch builds the streamlit
command and dashboard.screenshot drives a real browser for docs images and tests.
"""

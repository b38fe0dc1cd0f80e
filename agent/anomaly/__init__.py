"""On-host anomaly detection: a streaming per-series detector and the agent stage that runs it."""

"""Shared core: imports nothing of hostmond.agent, hostmond.collectors or hostmond.ingest."""

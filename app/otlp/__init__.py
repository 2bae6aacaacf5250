"""OpenTelemetry (OTLP) ingest: decoding requests and mapping spans to runs (issue 6).

Pure code: nothing here touches the database (``app.store.spans`` writes the
rows this package maps) or the web layer (``app.api.otlp`` routes requests).
"""

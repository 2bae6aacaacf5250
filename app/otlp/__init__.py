"""OpenTelemetry (OTLP) ingest: decoding requests and mapping spans to runs (issue 6).

Decoding and mapping are pure code: they touch neither the database
(``app.store.spans`` writes the rows this package maps) nor the web layer
(``app.api.otlp`` routes requests). ``writer`` groups concurrent requests into
one store transaction.
"""

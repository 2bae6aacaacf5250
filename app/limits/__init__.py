"""Limits that keep one client or one value from taking more than its share:
request rate (``rate``), requests in flight when the server is busy
(``admission``), concurrent streams (``streams``), oversized JSON values
(``values``). ``middleware.limits`` wires the first three into the app.

This package imports nothing on purpose: ``app.store.inputs`` imports
``values``, and the middleware modules import the API's error shape, which
imports the store; importing them here would make that a cycle.
"""

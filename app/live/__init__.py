"""Live: the change feed pushed to browsers over Server-Sent Events.

``notifier`` wakes the ``hub`` when a write commits (in this process directly,
from other processes through PostgreSQL LISTEN/NOTIFY or, on SQLite, a short
poll of the newest event id); the hub reads the new feed rows once and fans
them out to each connected client's bounded queue; ``routes`` turns a queue
into an SSE response, after replaying what a reconnecting client missed.
"""

"""The runner: workers that claim queued jobs and run their commands.

``worker`` claims jobs and keeps their leases; ``subprocess`` runs one command
in its own process group and reads its output; ``output`` turns that output
into batches of events; ``pool`` hosts workers inside ``runyard serve``;
``procs`` knows about process groups, environments and worker identities;
``retention`` prunes old runs. The runner writes only through the store, so
the live page sees its writes like any other.
"""

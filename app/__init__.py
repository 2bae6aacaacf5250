"""Runyard: a self-hosted runs dashboard."""

"""Database layer: typed models, engines and the few dialect differences."""

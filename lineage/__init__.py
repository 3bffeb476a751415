"""lineage package."""

__all__: list[str] = []

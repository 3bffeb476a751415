"""workflows package."""

__all__: list[str] = []

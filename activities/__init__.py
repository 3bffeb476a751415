"""activities package."""

__all__: list[str] = []

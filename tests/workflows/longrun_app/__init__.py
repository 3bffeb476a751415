"""A user's app with long-running governed actions (its own policy and activities)."""

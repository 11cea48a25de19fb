"""Renderers: they watch the release's events and draw them. None of them changes anything."""

"""Renderers: turn stored data into SVG, speedscope JSON, HTML and text."""

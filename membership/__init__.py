"""membership package (see DESIGN.md)."""

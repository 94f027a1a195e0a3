"""dp package (see DESIGN.md)."""

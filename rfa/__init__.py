"""rfa package (see DESIGN.md)."""

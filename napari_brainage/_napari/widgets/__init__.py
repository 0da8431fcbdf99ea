"""Dock widgets: each turns user input into a core call and a result into layers."""

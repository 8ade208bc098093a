"""Files: traversal-safe resolution, content types, validators and ranges."""

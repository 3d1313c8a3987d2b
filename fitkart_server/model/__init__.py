"""What is mirrored: the six tables' declarations, their schemas, documents and row rules."""

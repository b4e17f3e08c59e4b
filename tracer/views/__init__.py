"""Views of a snapshot: plain text, the rich live view, the final summary."""

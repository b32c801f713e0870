class DiffxaiError(Exception):
    """A user-facing error: its message is one line that names the culprit (file, key, class)."""

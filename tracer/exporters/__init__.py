"""Writers of session data to files, one module per format."""

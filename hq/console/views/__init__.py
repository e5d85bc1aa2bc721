"""Console screens, one blueprint each."""

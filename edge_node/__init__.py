"""Khidmat Edge node: the offline service desk of one center."""

__version__ = "0.1.0"

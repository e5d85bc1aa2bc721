"""Tests of the staff web UI: Flask test-client guards and Playwright browser runs."""

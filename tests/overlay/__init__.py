"""Tests of the overlay package."""

"""Throwaway PostgreSQL and Redis servers on free ports, for the tests that are about them."""

"""slimpipe: pipeline-parallel training over slow links with compressed stage boundaries."""

__version__ = "0.1.0"

"""CLI verbs that talk to the service over REST."""

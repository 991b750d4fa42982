"""One router per resource; each stays thin and calls backend.crud."""

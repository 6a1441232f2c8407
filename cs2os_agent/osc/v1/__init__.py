"""Commands for version 1 of the cs2os REST API."""

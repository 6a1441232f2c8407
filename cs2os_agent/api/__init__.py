"""cs2os-api: the REST API (``/v1``) in front of cs2os-conductor."""

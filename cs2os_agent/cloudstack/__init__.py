"""The CloudStack side: the management API client and VM discovery."""

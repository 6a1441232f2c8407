"""OpenStackClient plugin: ``openstack cs2os ...``."""

"""The migrated server's metadata and tags, from the described VM.

The real thing (Nova's metadata, tags and user data on the migrated
server) is in tests/e2e/test_ownership.py.
"""

from cs2os_agent.cloudstack import discovery
from cs2os_agent.conductor.flow import identity

VM = {
    "id": "4f1c0b7e-0000-4000-8000-000000000001", "name": "web-1",
    "displayname": "Web shop front", "instancename": "i-2-7-VM",
    "zonename": "zone-1", "domain": "globex",
    "domainpath": "ROOT/customers/globex", "account": "webshop",
    "project": None, "projectid": None,
    "serviceoffering": {"name": "Small"},
    "template": {"id": "tpl-1", "name": "debian-12"},
    "tags": [{"key": "env", "value": "prod"},
             {"key": "owner", "value": "team-a"}],
    "details": {"rootDiskController": "virtio", "keyboard": "us"},
}


def test_ids_names_owner_tags_and_details_become_metadata():
    metadata, skipped = identity.metadata(VM)
    assert metadata == {
        "cloudstack_vm_id": VM["id"],
        "cloudstack_vm_name": "web-1",
        "cloudstack_display_name": "Web shop front",
        "cloudstack_instance_name": "i-2-7-VM",
        "cloudstack_zone": "zone-1",
        "cloudstack_domain": "ROOT/customers/globex",
        "cloudstack_account": "webshop",
        "cloudstack_service_offering": "Small",
        "cloudstack_template_id": "tpl-1",
        "cloudstack_template_name": "debian-12",
        "cloudstack_tag:env": "prod",
        "cloudstack_tag:owner": "team-a",
        "cloudstack_detail:keyboard": "us",
        "cloudstack_detail:rootDiskController": "virtio",
    }
    assert skipped == []
    assert identity.tags(VM) == ["cloudstack", "cloudstack-vm:" + VM["id"]]
    assert all(len(t) <= 60 and "/" not in t and "," not in t
               for t in identity.tags(VM))


def test_what_does_not_fit_nova_is_named_not_sent():
    vm = dict(VM, tags=[{"key": "k%03d" % i, "value": "v"}
                        for i in range(200)]
              + [{"key": "long", "value": "x" * 256}])
    metadata, skipped = identity.metadata(vm)
    # 127 items: Nova's default quota of 128 with cs2os's migration id.
    assert len(metadata) == 127
    assert "cloudstack_tag:k116" in metadata  # 10 of its own + 117
    assert "cloudstack_tag:k117" not in metadata
    assert "cloudstack_tag:k117: over Nova's 128 metadata items" in skipped
    assert "cloudstack_tag:long: longer than 255 characters" in skipped
    assert all(len(v) <= 255 for v in metadata.values())


def test_secret_details_are_never_recorded():
    details = {"Encrypted.Password": "x", "SSH.PublicKey": "ssh-ed25519 AA",
               "api_key": "k", "cpuOvercommitRatio": "2", "myToken": "t",
               "private_ip_hint": "10.0.0.1"}
    assert discovery.public_details(details) == {
        "SSH.PublicKey": "ssh-ed25519 AA", "cpuOvercommitRatio": "2"}

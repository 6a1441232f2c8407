from oslo_config import cfg

cloudstack_group = cfg.OptGroup(
    "cloudstack",
    title="CloudStack management API options",
    help="How the conductor reaches the CloudStack management server the "
    "VMs are moved from. The API key must belong to a root admin: "
    "CloudStack shows volume paths, storage pool ids, instance names and "
    "hosts to root admins only.",
)

cloudstack_opts = [
    cfg.DictOpt(
        "network_map",
        default={},
        sample_default="guest-net-1:private,dmz:public-dmz",
        help="CloudStack network -> Neutron network, for every migration "
        "(a request's own networks override single entries). Keys are "
        "CloudStack network ids or names, values Neutron network ids or "
        "names. A NIC on a network with no mapping stops the migration in "
        "validate unless the request says drop_unmapped_nics.",
    ),
    cfg.DictOpt(
        "flavor_map",
        default={},
        sample_default="Medium Instance:m1.medium,Large Instance:m1.large",
        help="CloudStack service offering -> Nova flavor. Keys are offering "
        "ids or names, values flavor ids or names. A request's own flavor "
        "wins; an offering with no entry gets the smallest flavor that fits "
        "the VM's CPUs, memory and root disk. The mapped flavor's root disk "
        "must still hold the VM's root volume.",
    ),
    cfg.DictOpt(
        "volume_type_map",
        default={},
        sample_default="Premium Disk:ssd,pool-nfs-2:standard",
        help="CloudStack disk offering or primary storage pool -> Cinder "
        "volume type, for the Cinder volume each data disk becomes. Keys "
        "are disk offering ids or names, then pool ids or names; values "
        "volume type ids or names. A request's own volume_type wins; a "
        "data disk with no entry gets Cinder's default type.",
    ),
    cfg.DictOpt(
        "project_map",
        default={},
        sample_default="8c0b0b9e-0000-4000-8000-000000000001:acme-prod,"
        "ROOT/webshop:webshop,ROOT/customers/globex:globex",
        help="CloudStack owner -> Keystone project the migrated server, its "
        "ports and its image membership land in. Keys: a CloudStack project "
        "id or name (for VMs a CloudStack project owns), or "
        "<domain>/<account> where <domain> is the domain's path (ROOT, "
        "ROOT/customers) or its name; the key '*' catches every other owner. "
        "Values: Keystone project ids or names. A request's project wins. "
        "A VM whose owner has no entry (and no '*') stops in validate, naming "
        "the owner: nothing lands in cs2os's own project unless mapped "
        "there. cs2os's [openstack] user needs a role on every target "
        "project (admin when requests name a host: Nova lets only admins "
        "pick one).",
    ),
    cfg.URIOpt(
        "endpoint",
        schemes=["http", "https"],
        sample_default="https://cloudstack.example.com:8443/client/api",
        help="URL of the CloudStack API servlet (ends in /client/api).",
    ),
    cfg.StrOpt(
        "api_key",
        help="API key of a CloudStack root admin user.",
    ),
    cfg.StrOpt(
        "secret_key",
        secret=True,
        help="Secret key belonging to api_key. It signs every request and "
        "is never sent or logged.",
    ),
    cfg.IntOpt(
        "timeout",
        default=30,
        min=1,
        help="Seconds to wait for the answer to one API request.",
    ),
    cfg.BoolOpt(
        "verify",
        default=True,
        help="Verify the management server's TLS certificate. Turn off "
        "only in a lab: the requests carry a signature anyone in the "
        "middle could replay until it expires.",
    ),
    cfg.StrOpt(
        "ca_file",
        help="CA bundle to verify the management server's certificate "
        "with, instead of the system's.",
    ),
    cfg.FloatOpt(
        "job_poll_interval",
        default=2.0,
        min=0.1,
        help="Seconds between two queryAsyncJobResult calls while waiting "
        "for an asynchronous CloudStack job (stop, start, destroy).",
    ),
    cfg.IntOpt(
        "job_timeout",
        default=1800,
        min=1,
        help="Seconds to wait for one asynchronous CloudStack job. A stop "
        "waits for the guest to shut down cleanly, which CloudStack lets "
        "take minutes before it forces it.",
    ),
    cfg.BoolOpt(
        "unmanage_source",
        default=True,
        help="Once a migration is committed (the Nova server runs the "
        "migrated disk), have CloudStack unmanage the source VM "
        "(unmanageVirtualMachine, KVM since CloudStack 4.19): CloudStack "
        "forgets it, so nobody can start a second copy of the guest from "
        "CloudStack's UI; its volume files stay on primary storage. Off: "
        "the VM stays Stopped in CloudStack and the migration records a "
        "warning. A request's delete_source destroys it instead.",
    ),
    cfg.StrOpt(
        "kvm_libvirt_uri",
        default="qemu+ssh://root@{host}/system?"
        "keyfile=/etc/cs2os/ssh/id_ed25519&"
        "known_hosts=/etc/cs2os/ssh/known_hosts",
        help="libvirt URI of a CloudStack KVM host, for warm migrations: "
        "the conductor runs the source's block copy there. '{host}' is "
        "replaced with the host's address as CloudStack lists it. The "
        "host key must be verified: with known_hosts=FILE the conductor "
        "has libvirt run OpenSSH trusting that file alone: an unknown or "
        "changed key is refused (add a host with "
        "'ssh-keyscan HOST >> FILE' once its fingerprint is checked out of "
        "band); without it, OpenSSH uses the conductor user's known_hosts "
        "and cannot prompt. no_verify=1 is refused, and so are "
        "qemu+libssh:// and qemu+libssh2:// (libvirt 9.0's libssh "
        "transport stalls large replies and can crash the conductor).",
    ),
    cfg.PortOpt(
        "kvm_ssh_port",
        default=22,
        help="Port of the CloudStack KVM hosts' sshd, which the agent's "
        "mirror tunnel logs in to (with the agent's [transfer] ssh key and "
        "known_hosts file).",
    ),
    cfg.StrOpt(
        "kvm_ssh_user",
        help="User the agent's mirror tunnel logs in to the KVM hosts as "
        "(root: the tunnel hands its socket to the source QEMU's user). "
        "Unset: the agent's [transfer] ssh_user.",
    ),
]


def register_opts(conf):
    conf.register_group(cloudstack_group)
    conf.register_opts(cloudstack_opts, group=cloudstack_group)


def list_opts():
    return {cloudstack_group: cloudstack_opts}

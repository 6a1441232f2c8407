import socket

from oslo_config import cfg

default_opts = [
    cfg.StrOpt(
        "host",
        default=socket.gethostname(),
        sample_default="<current_hostname>",
        help="Name of this node. For cs2os-agent it must equal the "
        "nova-compute host name of this node (Nova's [DEFAULT] host): the "
        "conductor addresses the agent by the host Nova reports for the "
        "server.",
    ),
    cfg.IntOpt(
        "long_rpc_timeout",
        default=3600,
        min=60,
        help="Seconds an RPC caller waits for a long-running agent call "
        "(sync_overlay) to finish. The caller keeps checking that the agent "
        "is alive every rpc_response_timeout seconds (oslo.messaging call "
        "monitor), so a dead agent is still noticed quickly.",
    ),
]


def register_opts(conf):
    conf.register_opts(default_opts)


def list_opts():
    return {"DEFAULT": default_opts}

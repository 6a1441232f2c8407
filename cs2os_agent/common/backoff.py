"""How long to sleep between looks while another service changes state."""


def delays(cap, first=0.25):
    """``first``, twice that, ... up to ``cap`` seconds, then ``cap`` for
    as long as the caller keeps waiting.

    A Nova boot, stop or start or a Cinder attach on a healthy cloud ends
    within a second or two.  Looking every ``cap`` seconds from the start
    adds half of ``cap`` to every such wait on average, in several steps
    of every migration; a few quick looks early cost a handful of GETs,
    and a long wait still polls at ``cap``.
    """
    delay = min(first, cap)
    while True:
        yield delay
        delay = min(delay * 2, cap)

"""The image step: the CloudStack template, once, in Glance.

The template B that an overlay's header names is read through the same
transport as the overlay, spooled here with the resumable, throttled copy,
hashed (SHA-512 of the file, which Glance must match; the guest view, which
a warm migration's agent compares with Nova's base D) and uploaded once per
template file.  A root volume without a backing file (CloudStack FAT or
SPARSE) boots from a small blank placeholder image instead.
"""

import hashlib
import json
import os
import tempfile
import time

from cs2os_agent import guestview
from cs2os_agent import qcow2
from cs2os_agent import transfer
from cs2os_agent.common import exception
from cs2os_agent.conductor.flow import sources
from cs2os_agent.openstack import client as os_client
from cs2os_agent.transfer import monitor as transfer_monitor
from cs2os_agent.transfer import partial as transfer_partial

PLACEHOLDER_BYTES = 1024 * 1024
# Image properties: the template's guest-view digest, recorded once per
# image like the file fingerprint the image step dedups on.
GUEST_DIGEST_KEY = os_client.GUEST_DIGEST_KEY
GUEST_SIZE_KEY = os_client.GUEST_SIZE_KEY


def image(ctx):
    """The template B in Glance, once per template file (or the
    placeholder for a volume without a backing file)."""
    resources = ctx.resources
    vm = ctx.migration["source"]
    if resources["template_path"] is None:
        return _placeholder_image(ctx)
    template_source = sources.source_for(ctx.conf, vm,
                                         resources["template_path"])
    openstack = ctx.clients.openstack
    with transfer.get_source(template_source, ctx.conf) as src:
        header = qcow2.inspect_header(
            src.read_header(qcow2.HEADER_BYTES), src.describe())
        if header.has_backing:
            raise exception.Invalid(
                reason="template %s has a backing file of its own (%s)"
                % (resources["template_path"], header.backing_file))
        fingerprint = _fingerprint_key(src.fingerprint())
        found = openstack.find_template_image(vm["template"]["id"],
                                              fingerprint)
        if found is not None:
            ctx.resource(image_id=found.id)
            ctx.result(image_reused=True, template_bytes_moved=0)
            ctx.event("image", "template already in Glance as image %s"
                      % found.id)
            return
        with tempfile.TemporaryDirectory(
                dir=ctx.conf.conductor.image_spool_dir) as spool_dir:
            path = os.path.join(spool_dir, "template.qcow2")
            copied = spool(ctx, src, path)
            digest = _sha512(path)
            # While B is here: its guest view, which a warm migration's
            # shallow mirror must prove D equals (recorded once per image).
            started = time.monotonic()
            guest = guestview.guest_digest(path, "qcow2", spool_dir)
            guest["seconds"] = round(time.monotonic() - started, 3)
            image = openstack.upload_image(
                "cloudstack-template-%s" % vm["template"]["name"], path,
                "qcow2",
                {os_client.TEMPLATE_KEY: vm["template"]["id"],
                 os_client.FINGERPRINT_KEY: fingerprint,
                 os_client.HASH_KEY: digest,
                 os_client.GUEST_DIGEST_KEY: guest["digest"],
                 os_client.GUEST_SIZE_KEY: str(guest["virtual_size"])})
    # Glance hashed what it stored: it must be what we read at the source,
    # or the unsafe rebase onto Nova's copy of it would be wrong.
    if image.hash_algo == "sha512" and image.hash_value != digest:
        openstack.delete_image(image.id)
        raise exception.ImagesDiffer(
            left=resources["template_path"], right="image %s" % image.id,
            detail="sha512 %s at the source, %s in Glance"
            % (digest, image.hash_value))
    ctx.resource(image_id=image.id)
    ctx.result(image_reused=False, template_bytes_moved=copied,
               template_sha512=digest, template_guest_digest=guest)


def _placeholder_image(ctx):
    """A volume without a backing file (CloudStack FAT or SPARSE
    provisioning) replaces Nova's disk whole, so the server only needs some
    image to boot from first: one small blank image, made once."""
    openstack = ctx.clients.openstack
    found = openstack.find_placeholder_image()
    if found is None:
        with tempfile.TemporaryDirectory(
                dir=ctx.conf.conductor.image_spool_dir) as spool_dir:
            path = os.path.join(spool_dir, "placeholder.raw")
            with open(path, "wb") as f:
                f.truncate(PLACEHOLDER_BYTES)
            found = openstack.upload_image(
                "cs2os-placeholder", path, "raw",
                {os_client.PLACEHOLDER_KEY: "1"})
    ctx.resource(image_id=found.id)
    ctx.result(image_reused=False, template_bytes_moved=0,
               standalone_volume=True)
    ctx.event("image", "root volume %s has no backing file: the whole "
              "volume moves; the server boots from placeholder image %s "
              "first" % (ctx.migration["source"]["overlay_path"], found.id))


def image_with_guest_digest(ctx):
    """The cold image step, then the template's guest-view digest."""
    image(ctx)
    proof = template_guest_digest(ctx)
    ctx.resource(base_proof={k: proof[k] for k in
                             ("algorithm", "digest", "virtual_size")})


def template_guest_digest(ctx):
    """B's guest-view digest: recorded on the image, or read from B once
    more and recorded for the next migrations."""
    openstack = ctx.clients.openstack
    image = openstack.get_image(ctx.resources["image_id"])
    props = image.properties or {}
    if props.get(GUEST_DIGEST_KEY) and props.get(GUEST_SIZE_KEY):
        return {"algorithm": guestview.ALGORITHM,
                "digest": props[GUEST_DIGEST_KEY],
                "virtual_size": int(props[GUEST_SIZE_KEY])}
    # Not recorded (an image uploaded before the image step recorded it):
    # read the template once more and record it for the next ones.
    vm = ctx.migration["source"]
    template_source = sources.source_for(ctx.conf, vm,
                                         ctx.resources["template_path"])
    started = time.monotonic()
    with transfer.get_source(template_source, ctx.conf) as src, \
            tempfile.TemporaryDirectory(
                dir=ctx.conf.conductor.image_spool_dir) as spool_dir:
        path = os.path.join(spool_dir, "template.qcow2")
        # The image step's own resumable, throttled copy.
        spool(ctx, src, path)
        proof = guestview.guest_digest(path, "qcow2", spool_dir)
    openstack.set_image_properties(image.id, {
        GUEST_DIGEST_KEY: proof["digest"],
        GUEST_SIZE_KEY: str(proof["virtual_size"])})
    ctx.result(template_guest_digest=dict(
        proof, seconds=round(time.monotonic() - started, 3)))
    ctx.event("image", "template guest view hashed (%s, %s): %s"
              % (proof["algorithm"], proof["method"], proof["digest"]))
    return proof


def spool(ctx, src, path):
    """Copy a template to ``path`` with the resumable, throttled copy."""
    partial = transfer_partial.PartialFile(
        path, path + ".json", src.fingerprint(),
        ctx.conf.transfer.checkpoint_mib * 1024 * 1024)
    partial.resume_offset()
    monitor = transfer_monitor.TransferMonitor(
        ctx.id, "image", src.bytes_to_copy(),
        report=ctx.progress,
        interval=ctx.conf.agent.progress_interval,
        max_bandwidth_mbps=ctx.conf.transfer.max_bandwidth_mbps)
    partial.open(0)
    try:
        copied = src.copy_to(partial, monitor)
        partial.finish(src.size())
    except BaseException:
        partial.discard()
        raise
    monitor.finish()
    return copied


def _sha512(path):
    digest = hashlib.sha512()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(8 * 1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _fingerprint_key(fingerprint):
    return hashlib.sha256(
        json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()


def share(ctx, image_id):
    """Let the migration's target project boot the image: it stays
    registered once, in cs2os's project, and the target project becomes a
    member that has accepted it (so its users see it listed too).  Rollback
    leaves the membership: other migrations into that project share it."""
    project_id = ctx.migration.get("target_project_id")
    if project_id is None:
        return
    own_project, _user = ctx.clients.openstack.own_identity()
    if project_id == own_project:
        return
    ctx.guard()
    ctx.clients.openstack.share_image(image_id, project_id)
    ctx.openstack.accept_image(image_id)

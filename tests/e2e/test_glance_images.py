"""cs2os finds its images by template id and file fingerprint, never by
name: CloudStack templates share names (per-zone copies, per-account
uploads), and a real Glance holds any number of images of one name."""

import uuid

from cs2os_agent.openstack import client as os_client
from tools.testbed.harness import RUN_ID


def test_templates_of_one_name_each_get_their_image(minicloud, tmp_path):
    nova_glance = os_client.OpenStackClient(minicloud.conn)
    name = "cloudstack-template-e2e-%s" % RUN_ID
    template_ids = [str(uuid.uuid4()) for _ in range(3)]
    made = []
    try:
        for n, template_id in enumerate(template_ids):
            path = tmp_path / ("template-%d.raw" % n)
            path.write_bytes(bytes([n + 1]) * 65536)
            image = nova_glance.upload_image(
                name, str(path), "raw",
                {os_client.TEMPLATE_KEY: template_id,
                 os_client.FINGERPRINT_KEY: "fp-%d" % n})
            made.append(image.id)
        # Three images of one name in Glance, each found by its template.
        assert len(set(made)) == 3
        same_name = [i.id for i in minicloud.conn.image.images(name=name)]
        assert sorted(same_name) == sorted(made)
        for n, template_id in enumerate(template_ids):
            found = nova_glance.find_template_image(template_id, "fp-%d" % n)
            assert found is not None and found.id == made[n]
            assert nova_glance.find_template_image(template_id,
                                                   "other") is None
    finally:
        for image_id in made:
            minicloud.conn.image.delete_image(image_id, ignore_missing=True)

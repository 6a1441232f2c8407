"""A request's (or plan's) project_map, flavor_map and volume_type_map:
checked, looked up before the [cloudstack] options of the same names, and
named in the chosen_by texts.  The real thing (a server built with the
request map's flavor in its project on the minicloud) is
tests/e2e/test_request_maps.py."""

import types

import pytest

from cs2os_agent.common import exception
from cs2os_agent.conductor import manager
from cs2os_agent.conductor import maps
from cs2os_agent.conductor import plan_input
from cs2os_agent.conductor import plans
from cs2os_agent.conductor import request
from cs2os_agent.conductor import rpcapi
from cs2os_agent.conductor.flow import datadisks
from cs2os_agent.conductor.flow import owner
from cs2os_agent.conductor.flow import prepare
from tests.unit.conductor.helpers import CTXT

GiB = 1024 ** 3
VM = {"name": "web-1", "account": "webshop", "domain": "globex",
      "domainpath": "ROOT/customers/globex", "cpunumber": 1, "memory": 512,
      "serviceoffering": {"id": "so-1", "name": "Small Instance"}}


def ctx(options=None, flavor=None, **config):
    """A flow context's reads: the request's options and the [cloudstack]
    maps ``config``; Nova and Keystone that know every name."""
    cloudstack = {f: {} for f in maps.FIELDS}
    cloudstack.update(config)

    def get_flavor(ref):
        if ref.startswith("no-"):
            raise exception.Invalid(reason="flavor %s not found" % ref)
        return types.SimpleNamespace(id="id-" + ref, name=ref, disk=10)

    openstack = types.SimpleNamespace(
        get_flavor=get_flavor,
        smallest_flavor=lambda cpus, ram, disk: types.SimpleNamespace(
            name="m1.tiny", disk=1),
        find_project=lambda ref: types.SimpleNamespace(id="id-" + ref,
                                                       name=ref))
    return types.SimpleNamespace(
        migration={"options": options or {}, "flavor": flavor},
        conf=types.SimpleNamespace(
            cloudstack=types.SimpleNamespace(**cloudstack)),
        clients=types.SimpleNamespace(openstack=openstack))


def test_the_fields_are_the_rpc_apis():
    assert maps.FIELDS == rpcapi.MAPS


def test_maps_are_checked_kept_and_empty_ones_dropped():
    checked = request.validate({
        "source": "vm", "flavor_map": {"Small Instance": " m1.small "},
        "project_map": {"*": "acme"}, "volume_type_map": {}})
    assert checked["flavor_map"] == {"Small Instance": "m1.small"}
    assert checked["project_map"] == {"*": "acme"}
    assert "volume_type_map" not in checked
    assert "flavor_map" not in request.validate({"source": "vm"})


@pytest.mark.parametrize("field, value, reason", [
    ("flavor_map", ["m1.small"], "flavor_map must be a dict"),
    ("flavor_map", {"o%d" % n: "f" for n in range(1001)},
     "flavor_map has 1001 entries; at most 1000"),
    ("project_map", {"ROOT/a\nb": "acme"},
     r"project_map: key 'ROOT/a\\nb' must be 1 to 255 printable "
     "characters, not blank"),
    ("project_map", {" ": "acme"}, "project_map: key ' ' must be"),
    ("volume_type_map", {"k" * 256: "ssd"},
     "volume_type_map: key 'kkkk.*\\.\\.\\. must be 1 to 255"),
    ("volume_type_map", {"Premium": ""},
     "volume_type_map: the value of key 'Premium' must be 1 to 255"),
    ("volume_type_map", {"Premium": "ss\u200bd"},
     "the value of key 'Premium' must be 1 to 255 printable"),
    ("flavor_map", {"Small": 3}, "flavor_map: the value of key 'Small'"),
])
def test_bad_maps_are_refused_naming_field_and_key(field, value, reason):
    with pytest.raises(exception.Invalid, match=reason):
        request.validate({"source": "vm", field: value})


def test_the_request_map_comes_first_and_a_missing_key_falls_through():
    both = ctx({"flavor_map": {"Small Instance": "m1.small"}},
               flavor_map={"so-1": "m1.large", "Big": "m1.xlarge"})
    # The request's map, even by name, before the config's by id.
    assert maps.choose(both, "flavor_map", ("so-1", "Small Instance")) == (
        "m1.small", "Small Instance", "request flavor_map")
    assert maps.choose(both, "flavor_map", ("big-id", "Big")) == (
        "m1.xlarge", "Big", "[cloudstack] flavor_map")
    assert maps.choose(both, "flavor_map", ("x", None)) is None


@pytest.mark.parametrize("options, config, ref, chosen_by", [
    ({"flavor": None}, {}, "m1.tiny", "smallest fitting"),
    ({}, {"Small Instance": "m1.large"}, "m1.large",
     "[cloudstack] flavor_map (service offering Small Instance)"),
    ({"flavor_map": {"so-1": "m1.small"}}, {"Small Instance": "m1.large"},
     "m1.small", "request flavor_map (service offering so-1)"),
    ({"flavor_map": {"Other": "m1.small"}}, {"so-1": "m1.large"},
     "m1.large", "[cloudstack] flavor_map (service offering so-1)"),
    ({"flavor_map": {"Other": "m1.small"}}, {}, "m1.tiny",
     "smallest fitting"),
])
def test_flavor_precedence_and_chosen_by(options, config, ref, chosen_by):
    flavor, by = prepare.choose_flavor(
        ctx(options, flavor_map=config), VM, GiB)
    assert (flavor.name, by) == (ref, chosen_by)


def test_the_requests_flavor_wins_over_its_map_and_checks_still_apply():
    options = {"flavor_map": {"so-1": "m1.small"}}
    flavor, by = prepare.choose_flavor(ctx(options, flavor="m1.big"), VM,
                                       GiB)
    assert (flavor.name, by) == ("m1.big", "request")
    with pytest.raises(exception.OverlayTooLarge):
        prepare.choose_flavor(ctx(options), VM, 11 * GiB)
    with pytest.raises(exception.Invalid, match="flavor no-such not found, "
                       r"named by the request flavor_map \(service offering "
                       r"so-1\)"):
        prepare.choose_flavor(ctx({"flavor_map": {"so-1": "no-such"}}), VM,
                              GiB)


@pytest.mark.parametrize("options, config, name, chosen_by", [
    ({"project_map": {"ROOT/customers/globex/webshop": "acme"}},
     {"globex/webshop": "globex"}, "acme",
     "request project_map (ROOT/customers/globex/webshop)"),
    # The request map's catch-all answers for its VMs before the config's
    # entries: a wave's '*' is the wave's.
    ({"project_map": {"*": "wave"}}, {"globex/webshop": "globex"}, "wave",
     "request project_map (*)"),
    ({"project_map": {"ROOT/other": "acme"}}, {"globex/webshop": "globex"},
     "globex", "[cloudstack] project_map (globex/webshop)"),
    ({"project": "erp", "project_map": {"*": "wave"}}, {"*": "x"}, "erp",
     "request"),
])
def test_project_precedence_and_chosen_by(options, config, name, chosen_by):
    project, by = owner.target_project(ctx(options, project_map=config), VM)
    assert (project.name, by) == (name, chosen_by)


def test_no_entry_in_either_project_map_names_both():
    with pytest.raises(exception.Invalid) as info:
        owner.target_project(ctx({"project_map": {"ROOT/x": "acme"}}), VM)
    assert ("CloudStack account webshop of domain ROOT/customers/globex "
            "owns VM web-1 and neither the request's project_map nor "
            "[cloudstack] project_map has an entry for it: add one of "
            "ROOT/customers/globex/webshop, globex/webshop (or *") \
        in str(info.value)


DISK = {"diskofferingid": "off-id", "diskofferingname": "Premium",
        "storage": {"id": "pool-1", "name": "nfs-1"}}


@pytest.mark.parametrize("options, config, name, chosen_by", [
    ({"volume_type_map": {"nfs-1": "fast"}}, {"off-id": "slow"}, "fast",
     "request volume_type_map (nfs-1)"),
    ({"volume_type_map": {"other": "fast"}}, {"Premium": "slow"}, "slow",
     "[cloudstack] volume_type_map (Premium)"),
    ({"volume_type": "gold", "volume_type_map": {"nfs-1": "fast"}}, {},
     "gold", "request"),
    ({}, {}, None, "Cinder's default"),
])
def test_volume_type_precedence_and_chosen_by(options, config, name,
                                              chosen_by):
    assert datadisks.typed(ctx(options, volume_type_map=config), DISK) == {
        "volume_type": name, "volume_type_chosen_by": chosen_by}


def test_a_plan_carries_maps_in_defaults_and_overrides():
    defaults = plan_input.fields(
        {"flavor_map": {"Small": "m1.small"}}, "defaults")
    items = plan_input.items(["a", {"vm": "b", "overrides": {
        "flavor_map": {"Small": "m1.large"},
        "project_map": {"*": "acme"}}}], defaults)
    plan = {"defaults": defaults}
    assert plans.request_for(plan, items[0]) == {
        "flavor_map": {"Small": "m1.small"}, "source": "a"}
    # A VM's map adds to and overrides the plan's, key by key.
    defaults = plan_input.fields(
        {"flavor_map": {"Small": "m1.small", "Big": "m1.xlarge"}},
        "defaults")
    items = plan_input.items([{"vm": "b", "overrides": {
        "flavor_map": {"Small": "m1.large"}}}], defaults)
    assert request.validate(plans.request_for(
        {"defaults": defaults}, items[0]))["flavor_map"] == {
            "Small": "m1.large", "Big": "m1.xlarge"}
    with pytest.raises(exception.Invalid, match="overrides of b: "
                       "volume_type_map: the value of key 'p'"):
        plan_input.items([{"vm": "b", "overrides": {
            "volume_type_map": {"p": " "}}}], {})


def test_the_record_keeps_the_maps_and_a_replay_must_match(db):
    mgr = manager.ConductorManager(
        db, engine=types.SimpleNamespace(submit=lambda mid: True))
    asked = {"source": "web-1", "idempotency_key": "k-1",
             "flavor_map": {"Small": "m1.small"},
             "project_map": {"*": "acme"}}
    first = mgr.create_migration(CTXT, dict(asked))
    assert first["options"]["flavor_map"] == {"Small": "m1.small"}
    assert first["options"]["project_map"] == {"*": "acme"}
    assert "volume_type_map" not in first["options"]
    assert mgr.create_migration(CTXT, dict(asked))["id"] == first["id"]
    with pytest.raises(exception.IdempotencyKeyReused,
                       match=r"\(flavor_map differ\)"):
        mgr.create_migration(CTXT, dict(asked, flavor_map={
            "Small": "m1.large"}))

"""A migration request checked and completed before it is recorded."""

import pytest

from cs2os_agent.common import exception
from cs2os_agent.conductor import request


@pytest.mark.parametrize("bad, words", [
    ({}, "source"),
    ({"source": "vm", "mode": "hot"}, "mode hot is not supported"),
    ({"source": "vm", "mode": "warm", "cutover": "later"},
     "cutover later is not supported"),
    ({"source": "vm", "cutover": "manual"},
     "warm and live migrations only"),
    ({"source": "vm", "mode": "warm", "cutover_method": "reboot"},
     "cutover method reboot is not supported; supported: shutdown, force"),
    ({"source": "vm", "cutover_method": "force"},
     "cutover_method applies to warm and live migrations only (mode is "
     "cold)"),
    ({"source": "vm", "mode": "cold", "cutover_method": "shutdown"},
     "cutover_method applies to warm and live migrations only (mode is "
     "cold)"),
    ({"source": "vm", "mode": "warm", "cutover_method": True},
     "cutover_method must be a str"),
    ({"source": "vm", "colour": "red"}, "unknown field(s) colour"),
    ({"source": "vm", "delete_source": "yes"}, "delete_source must be"),
    ({"source": "vm", "config_drive": "yes"}, "config_drive must be a bool"),
    ({"source": "vm", "config_drive": 1}, "config_drive must be a bool"),
    ({"source": "vm", "keep_snapshots": "yes"},
     "keep_snapshots must be a bool"),
    ({"source": "vm", "mode": "warm", "keep_snapshots": True},
     "keep_snapshots applies to cold migrations only"),
    ("vm", "must be a dict"),
])
def test_bad_requests_name_the_problem(bad, words):
    with pytest.raises(exception.Invalid) as err:
        request.validate(bad)
    assert words in str(err.value)


def test_the_request_defaults_a_warm_cutover_method_to_shutdown():
    assert request.validate({"source": "vm", "mode": "warm"})[
        "cutover_method"] == "shutdown"
    assert request.validate({"source": "vm", "mode": "warm",
                             "cutover_method": "force"})[
        "cutover_method"] == "force"
    assert "cutover_method" not in request.validate({"source": "vm"})


def test_request_defaults_a_warm_cutover_to_auto():
    assert request.validate({"source": "vm", "mode": "warm"})["cutover"] \
        == "auto"
    assert "cutover" not in request.validate({"source": "vm"})


@pytest.mark.parametrize("given, kept", [
    ({}, False),
    ({"config_drive": None}, False),
    ({"config_drive": False}, False),
    ({"config_drive": True}, True),
])
def test_the_config_drive_defaults_to_false(given, kept):
    assert request.validate(dict(given, source="vm"))[
        "config_drive"] is kept
    assert request.validate(dict(given, source="vm", mode="warm"))[
        "config_drive"] is kept


def test_keep_snapshots_defaults_to_false():
    assert request.validate({"source": "vm"})["keep_snapshots"] is False
    assert request.validate({"source": "vm", "mode": "warm",
                             "keep_snapshots": False})[
        "keep_snapshots"] is False
    assert request.validate({"source": "vm", "keep_snapshots": True})[
        "keep_snapshots"] is True


# -- the target project ------------------------------------------------------


def test_a_request_without_a_project_carries_none():
    assert request.validate({"source": "vm"})["project"] is None
    assert request.validate({"source": "vm", "project": None})[
        "project"] is None


@pytest.mark.parametrize("given, kept", [
    ("tenant-a", "tenant-a"),
    ("  8f2c1e0a9b7d4c3e  ", "8f2c1e0a9b7d4c3e"),
    ("Équipe web", "Équipe web"),
    ("p" * 255, "p" * 255),
    (" %s " % ("p" * 255), "p" * 255),
])
def test_the_project_is_stripped(given, kept):
    assert request.validate({"source": "vm", "project": given})[
        "project"] == kept


@pytest.mark.parametrize("bad", [
    "", "   ", "\t\n", "p" * 256, "web\x00a", "web\nteam", "a\u200bb",
    "a\xa0b", "a\u2028b", 7, ["a"],
])
def test_a_bad_project_is_refused_naming_the_field(bad):
    with pytest.raises(exception.Invalid) as err:
        request.validate({"source": "vm", "project": bad})
    assert "project" in str(err.value)


@pytest.mark.parametrize("value, wanted", [
    (None, None), ("ssd", "ssd"), ("  ceph-fast ", "ceph-fast")])
def test_volume_type_is_stripped_or_none(value, wanted):
    body = {"source": "vm"}
    if value is not None:
        body["volume_type"] = value
    assert request.validate(body)["volume_type"] == wanted


@pytest.mark.parametrize("value", ["", "   ", "a\u200bb", "x" * 256])
def test_a_bad_volume_type_is_named(value):
    with pytest.raises(exception.Invalid) as err:
        request.validate({"source": "vm", "volume_type": value})
    assert "volume_type (the Cinder volume type" in str(err.value)

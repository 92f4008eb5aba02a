"""Object Ownership controls (``?ownershipControls``, and
``x-amz-object-ownership`` on CreateBucket), kept in the bucket's record.

Every object of a vault belongs to the vault, whoever of its keys wrote it,
and ACLs never let anyone else in: each of the three settings describes
that truthfully, so the setting is kept and answered as given and changes
nothing (``BucketOwnerEnforced`` is what the vault does in any case)."""

from __future__ import annotations

from xml.etree.ElementTree import SubElement

from . import documents
from .errors import S3Error
from .xml import MAX_SMALL_BODY, _add, _children, _document, _parse, _root, _text

SETTING = "ownership"
CHOICES = ("BucketOwnerEnforced", "BucketOwnerPreferred", "ObjectWriter")


def checked(value: str) -> str:
    if value not in CHOICES:
        raise S3Error("InvalidArgument", f"ObjectOwnership must be one of {', '.join(CHOICES)}",
                      ArgumentName="x-amz-object-ownership", ArgumentValue=value[:64])
    return value


def parse(body: bytes) -> str:
    rules = _children(_parse(body, "OwnershipControls", MAX_SMALL_BODY), "Rule")
    if len(rules) != 1:
        raise S3Error("MalformedXML")
    value = _text(rules[0], "ObjectOwnership")
    if value not in CHOICES:
        raise S3Error("MalformedXML")
    return value


def render(value: str) -> bytes:
    root = _root("OwnershipControls")
    _add(SubElement(root, "Rule"), "ObjectOwnership", value)
    return _document(root)


ROUTES = documents.routes("ownershipControls", SETTING, "OwnershipControlsNotFoundError", MAX_SMALL_BODY,
                          parse, render)

"""Put/Get/DeleteBucketLifecycleConfiguration (``?lifecycle``) and the
``x-amz-expiration`` header; the rules and the worker that applies them
are :mod:`vault.services.s3lifecycle`'s.

A configuration is checked whole before it is kept: S3's codes for what is
wrong (MalformedXML for a missing or repeated element or a Status other
than Enabled/Disabled, InvalidArgument for an ID over 255 characters or used
twice, Days not above 0, a Date not at midnight UTC). Transitions are
refused: there is one storage class.
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime, timezone
from xml.etree.ElementTree import Element, SubElement

from ..services import s3lifecycle as lc
from ..services.s3lifecycle import Filter, Rule
from .errors import S3Error
from . import documents
from .xml import _add, _children, _document, _local, _optional, _parse, _root, _text, timestamp

MAX_BODY = 1 << 20  # 1,000 rules
MAX_RULES = 1000
MAX_ID = 255
MAX_NEWER_NONCURRENT = 100
# ISO 8601's extended form: a date, or a date and time with an optional zone.
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})?)?")
_FILTER_FORMS = {"Prefix": "prefix", "Tag": "tag", "ObjectSizeGreaterThan": "gt", "ObjectSizeLessThan": "lt",
                 "And": "and"}


# -- parsing -------------------------------------------------------------------------------


def parse(body: bytes) -> list[Rule]:
    root = _parse(body, "LifecycleConfiguration", MAX_BODY)
    rules = [_rule(element) for element in _children(root, "Rule")]
    if not 0 < len(rules) <= MAX_RULES:
        raise S3Error("MalformedXML", f"A lifecycle configuration has 1 to {MAX_RULES} rules")
    seen: set[str] = set()
    for rule in rules:
        if rule.id in seen:
            raise S3Error("InvalidArgument", "Rule ID must be unique. Found same ID for more than one rule")
        seen.add(rule.id)
    return rules


def _rule(element: Element) -> Rule:
    rule_id = _optional(element, "ID") or secrets.token_urlsafe(12)
    if len(rule_id) > MAX_ID:
        raise S3Error("InvalidArgument", f"ID length should not exceed allowed limit of {MAX_ID}")
    status = _text(element, "Status")
    if status not in ("Enabled", "Disabled"):
        raise S3Error("MalformedXML", "Status must be Enabled or Disabled")
    if _children(element, "Transition") or _children(element, "NoncurrentVersionTransition"):
        raise S3Error("InvalidRequest", "Transitions are not supported: objects have one storage class here "
                      "(STANDARD)")
    rule = Rule(rule_id, status == "Enabled", _filter(element))
    expiration = _one(element, "Expiration")
    if expiration is not None:
        _expiration(rule, expiration)
    noncurrent = _one(element, "NoncurrentVersionExpiration")
    if noncurrent is not None:
        rule.noncurrent_days = _days(noncurrent, "NoncurrentDays", "NoncurrentDays for NoncurrentVersionExpiration")
        newer = _number(noncurrent, "NewerNoncurrentVersions")
        if newer is not None and not 0 < newer <= MAX_NEWER_NONCURRENT:
            raise S3Error("InvalidArgument", f"NewerNoncurrentVersions must be 1 to {MAX_NEWER_NONCURRENT}")
        rule.newer_noncurrent = newer
    abort = _one(element, "AbortIncompleteMultipartUpload")
    if abort is not None:
        if rule.filter.tags:
            raise S3Error("InvalidRequest", "AbortIncompleteMultipartUpload cannot be specified with Tags")
        rule.abort_days = _days(abort, "DaysAfterInitiation", "DaysAfterInitiation for AbortIncompleteMultipartUpload")
    if expiration is None and noncurrent is None and abort is None:
        raise S3Error("InvalidRequest", "At least one action needs to be specified in a rule")
    return rule


def _filter(rule: Element) -> Filter:
    """The rule's Filter, or its legacy Prefix (exactly one of them)."""
    legacy, element = _optional(rule, "Prefix"), _one(rule, "Filter")
    if (legacy is None) == (element is None):
        raise S3Error("MalformedXML", "A rule has either a Filter or a Prefix")
    if element is None:
        return Filter("legacy", legacy or "")
    given = [child for child in element if _local(child.tag) in _FILTER_FORMS]
    if len(given) > 1:
        raise S3Error("MalformedXML", "A Filter has one condition; combine several with And")
    if not given:
        return Filter("empty")
    form = _FILTER_FORMS[_local(given[0].tag)]
    where = given[0] if form == "and" else element
    tags: dict[str, str] = {}
    for tag in _children(where, "Tag"):
        key = _text(tag, "Key", strip=False)
        if key in tags:
            raise S3Error("InvalidRequest", "Duplicate Tag Keys are not allowed")
        tags[key] = _optional(tag, "Value") or ""
    gt, lt = _number(where, "ObjectSizeGreaterThan"), _number(where, "ObjectSizeLessThan")
    if gt is not None and lt is not None and gt >= lt:
        raise S3Error("InvalidArgument", "ObjectSizeGreaterThan must be less than ObjectSizeLessThan")
    return Filter(form, _optional(where, "Prefix") or "", tags, gt, lt)


def _expiration(rule: Rule, element: Element) -> None:
    days, date, marker = (_optional(element, n) for n in ("Days", "Date", "ExpiredObjectDeleteMarker"))
    if sum(v is not None for v in (days, date, marker)) != 1:
        raise S3Error("MalformedXML", "Expiration has one of Days, Date and ExpiredObjectDeleteMarker")
    if days is not None:
        rule.days = _days(element, "Days", "'Days' for Expiration action")
    elif date is not None:
        rule.date = _midnight(date)
    else:
        flag = (marker or "").strip().lower()
        if flag not in ("true", "false"):
            raise S3Error("MalformedXML", "ExpiredObjectDeleteMarker is true or false")
        if rule.filter.tags:
            raise S3Error("InvalidRequest", "ExpiredObjectDeleteMarker cannot be specified with tags")
        rule.delete_marker = flag == "true"


def _midnight(text: str) -> float:
    """An ISO 8601 date (or date and time) at midnight UTC, as a timestamp."""
    try:
        if not _ISO_DATE.fullmatch(text.strip()):
            raise ValueError(text)
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise S3Error("InvalidArgument", "'Date' must be in ISO 8601 format") from None
    when = when.replace(tzinfo=when.tzinfo or timezone.utc).astimezone(timezone.utc)
    if (when.hour, when.minute, when.second, when.microsecond) != (0, 0, 0, 0):
        raise S3Error("InvalidArgument", "'Date' must be at midnight GMT")
    return when.timestamp()


def _one(parent: Element, name: str) -> Element | None:
    found = _children(parent, name)
    if len(found) > 1:
        raise S3Error("MalformedXML", f"{name} is given more than once")
    return found[0] if found else None


def _number(parent: Element, name: str) -> int | None:
    text = _optional(parent, name)
    if text is None:
        return None
    text = text.strip()
    if not text.lstrip("-").isdigit():
        raise S3Error("MalformedXML", f"{name} must be an integer")
    return int(text)


def _days(parent: Element, name: str, what: str) -> int:
    n = _number(parent, name)
    if n is None:
        raise S3Error("MalformedXML", f"{name} is missing")
    if n <= 0:
        raise S3Error("InvalidArgument", f"{what} must be a positive integer")
    return n


# -- rendering -------------------------------------------------------------------------------


def render(rules: list[Rule]) -> bytes:
    root = _root("LifecycleConfiguration")
    for rule in rules:
        element = SubElement(root, "Rule")
        _add(element, "ID", rule.id)
        _render_filter(element, rule.filter)
        _add(element, "Status", "Enabled" if rule.enabled else "Disabled")
        if rule.days is not None or rule.date is not None or rule.delete_marker is not None:
            expiration = SubElement(element, "Expiration")
            if rule.days is not None:
                _add(expiration, "Days", rule.days)
            elif rule.date is not None:
                _add(expiration, "Date", timestamp(rule.date))
            else:
                _add(expiration, "ExpiredObjectDeleteMarker", bool(rule.delete_marker))
        if rule.noncurrent_days is not None:
            noncurrent = SubElement(element, "NoncurrentVersionExpiration")
            _add(noncurrent, "NoncurrentDays", rule.noncurrent_days)
            if rule.newer_noncurrent is not None:
                _add(noncurrent, "NewerNoncurrentVersions", rule.newer_noncurrent)
        if rule.abort_days is not None:
            _add(SubElement(element, "AbortIncompleteMultipartUpload"), "DaysAfterInitiation", rule.abort_days)
    return _document(root)


def _render_filter(rule: Element, f: Filter) -> None:
    if f.form == "legacy":
        _add(rule, "Prefix", f.prefix)
        return
    element = SubElement(rule, "Filter")
    if f.form == "empty":
        return
    where = SubElement(element, "And") if f.form == "and" else element
    if f.form in ("and", "prefix"):
        _add(where, "Prefix", f.prefix)
    for key, value in f.tags.items():
        tag = SubElement(where, "Tag")
        _add(tag, "Key", key)
        _add(tag, "Value", value)
    if f.size_gt is not None:
        _add(where, "ObjectSizeGreaterThan", f.size_gt)
    if f.size_lt is not None:
        _add(where, "ObjectSizeLessThan", f.size_lt)


ROUTES = documents.routes("lifecycle", lc.SETTING, "NoSuchLifecycleConfiguration", MAX_BODY,
                          lambda body: lc.dump(parse(body)), lambda kept: render(lc.load(kept)))

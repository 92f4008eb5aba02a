"""Put/Get/DeleteBucketCors (``?cors``), preflight ``OPTIONS`` requests and
the ``Access-Control-*`` headers of actual cross-origin requests; the rules
and their matching are :mod:`vault.services.s3cors`'s.

A preflight is not signed (browsers send none): it is answered from the
bucket's rules alone. Without ``Origin`` or ``Access-Control-Request-Method``
it is a bad request (400); otherwise it is allowed (200 with the headers) or
refused with 403 AccessForbidden, the same answer for a bucket that does not
exist, is another vault's or keeps no rules: a preflight reveals nothing
beyond whether that origin may make that request, which is what CORS is for.
"""

from __future__ import annotations

from xml.etree.ElementTree import Element, SubElement

from aiohttp import web

from ..services import s3cors
from ..services.s3cors import CorsRule
from .errors import S3Error
from . import documents
from .front import SERVICES
from .xml import _add, _children, _document, _optional, _parse, _root

MAX_BODY = 64 << 10
MAX_RULES = 100
MAX_ID = 255
VARY = "Origin, Access-Control-Request-Headers, Access-Control-Request-Method"
REFUSED = ("CORSResponse: This CORS request is not allowed. This is usually because the evaluation of Origin, "
           "request method / Access-Control-Request-Method or Access-Control-Request-Headers are not "
           "whitelisted by the resource's CORS spec.")


# -- configuration -------------------------------------------------------------------------


def parse(body: bytes) -> list[CorsRule]:
    root = _parse(body, "CORSConfiguration", MAX_BODY)
    rules = [_rule(element) for element in _children(root, "CORSRule")]
    if not 0 < len(rules) <= MAX_RULES:
        raise S3Error("MalformedXML", f"A CORS configuration has 1 to {MAX_RULES} rules")
    return rules


def _rule(element: Element) -> CorsRule:
    def values(name: str) -> list[str]:
        return [(child.text or "").strip() for child in _children(element, name)]

    origins, methods = values("AllowedOrigin"), values("AllowedMethod")
    if not origins or not methods:
        raise S3Error("MalformedXML", "A CORSRule has at least one AllowedOrigin and one AllowedMethod")
    for method in methods:
        if method not in s3cors.METHODS:
            raise S3Error("InvalidRequest", f"Found unsupported HTTP method in CORS config. Unsupported method is "
                          f"{method[:40]}")
    headers = values("AllowedHeader")
    for name, given in (("AllowedOrigin", origins), ("AllowedHeader", headers)):
        if any(v.count("*") > 1 for v in given):
            raise S3Error("InvalidRequest", f'{name} "{next(v for v in given if v.count("*") > 1)[:80]}" '
                          "can not have more than one wildcard.")
    rule_id = _optional(element, "ID") or ""
    if len(rule_id) > MAX_ID:
        raise S3Error("InvalidArgument", f"ID length should not exceed allowed limit of {MAX_ID}")
    max_age = (_optional(element, "MaxAgeSeconds") or "").strip()
    if max_age and not max_age.isdigit():
        raise S3Error("MalformedXML", "MaxAgeSeconds must be a whole number")
    return CorsRule(origins, methods, headers, values("ExposeHeader"), int(max_age) if max_age else None, rule_id)


def render(rules: list[CorsRule]) -> bytes:
    root = _root("CORSConfiguration")
    for rule in rules:
        element = SubElement(root, "CORSRule")
        if rule.id:
            _add(element, "ID", rule.id)
        for tag, values in (("AllowedHeader", rule.headers), ("AllowedMethod", rule.methods),
                            ("AllowedOrigin", rule.origins), ("ExposeHeader", rule.expose)):
            for value in values:
                _add(element, tag, value)
        if rule.max_age is not None:
            _add(element, "MaxAgeSeconds", rule.max_age)
    return _document(root)


ROUTES = documents.routes("cors", s3cors.SETTING, "NoSuchCORSConfiguration", MAX_BODY,
                          lambda body: s3cors.dump(parse(body)), lambda kept: render(s3cors.load(kept)))


# -- requests --------------------------------------------------------------------------------


def _rules(request: web.Request, bucket: str) -> list[CorsRule]:
    services = request.app[SERVICES]
    return s3cors.rules_of(services.buckets.index, services.vaults, bucket)


def _allowed(rule: CorsRule, origin: str) -> dict[str, str]:
    """The headers that tell the browser ``origin`` is allowed by ``rule``."""
    anyone = "*" in rule.origins
    headers = {"Access-Control-Allow-Origin": "*" if anyone else origin,
               "Access-Control-Allow-Methods": ", ".join(rule.methods), "Vary": VARY}
    if not anyone:
        headers["Access-Control-Allow-Credentials"] = "true"
    if rule.expose:
        headers["Access-Control-Expose-Headers"] = ", ".join(rule.expose)
    return headers


def preflight(request: web.Request, bucket: str) -> web.StreamResponse:
    """The answer to an ``OPTIONS`` request on ``bucket`` (or one of its objects)."""
    origin = request.headers.get("Origin")
    method = request.headers.get("Access-Control-Request-Method")
    if not origin:
        raise S3Error("InvalidRequest", "Insufficient information. Origin request header needed.")
    if not method:
        raise S3Error("InvalidRequest", "Invalid Access-Control-Request-Method: null")
    asked = [h.strip() for h in request.headers.get("Access-Control-Request-Headers", "").split(",") if h.strip()]
    rule = s3cors.allowing(_rules(request, bucket), origin, method, asked)
    if rule is None:
        raise S3Error("AccessForbidden", REFUSED, Method=method[:20], ResourceType="OBJECT" if "/" in
                      request.path.strip("/") else "BUCKET")
    headers = _allowed(rule, origin)
    if asked:
        headers["Access-Control-Allow-Headers"] = ", ".join(asked)
    if rule.max_age is not None:
        headers["Access-Control-Max-Age"] = str(rule.max_age)
    return web.Response(headers=headers)


async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    """Add the ``Access-Control-*`` headers to the answer (success or error)
    of an actual cross-origin request that a rule of its bucket allows."""
    origin = request.headers.get("Origin")
    bucket = request.get("s3_bucket", "")
    if not origin or not bucket or request.method == "OPTIONS":
        return
    rule = s3cors.allowing(_rules(request, bucket), origin, request.method)
    if rule is not None:
        response.headers.update(_allowed(rule, origin))

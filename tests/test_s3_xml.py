"""S3 XML: the documents rendered here as botocore's own parser reads them,
the request bodies botocore's serializer writes as parsed here, and hostile
or malformed bodies refused."""

from __future__ import annotations

from typing import Any

import botocore.session
import pytest
from botocore import handlers, parsers

from tests.s3helpers import body_of, capture, client
from vault.s3 import xml
from vault.s3.errors import S3Error
from vault.s3.xml import Listing, ObjectEntry, Owner

MODEL = botocore.session.get_session().get_service_model("s3")
OWNER = Owner("vault-a", "vault-a")
T = 1_700_000_000.25
ODD = "dir/a b+c&d<e>'\"ü%2F"


def parsed(operation: str, body: bytes, status: int = 200) -> dict[str, Any]:
    """What botocore makes of the answer ``body`` to ``operation``."""
    parser = parsers.create_parser("rest-xml")
    return parser.parse({"body": body, "headers": {}, "status_code": status},
                        MODEL.operation_model(operation).output_shape)


def refused(code: str, parse: Any, body: bytes) -> None:
    with pytest.raises(S3Error) as caught:
        parse(body)
    assert caught.value.code == code, caught.value


def test_error_document():
    error = S3Error("NoSuchKey", resource="/b/k", Key="k")
    document = xml.error_document(error, "req-1")
    assert document.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<Error>')
    assert parsed("GetObject", document, 404)["Error"] == {
        "Code": "NoSuchKey", "Message": "The specified key does not exist.", "Key": "k", "Resource": "/b/k"}
    assert b"<RequestId>req-1</RequestId>" in document  # botocore reads it from the header


def test_list_buckets():
    answer = parsed("ListBuckets", xml.list_buckets(OWNER, [("alpha", T), ("beta", T + 1)]))
    assert answer["Owner"] == {"ID": "vault-a", "DisplayName": "vault-a"}
    assert [b["Name"] for b in answer["Buckets"]] == ["alpha", "beta"]
    assert answer["Buckets"][0]["CreationDate"].timestamp() == T


def listing(url_encode: bool = False) -> Listing:
    return Listing("bucket", ODD[:4], "/", 2, True, [ObjectEntry(ODD, T, "0" * 32, 5, OWNER)], [ODD + "/"],
                   url_encode)


@pytest.mark.parametrize("url_encode", [False, True])
def test_list_objects_v2(url_encode):
    answer = parsed("ListObjectsV2", xml.list_objects_v2(listing(url_encode), "tok-1", "tok-2", ODD))
    handlers.decode_list_object_v2(answer, {"encoding_type_auto_set": True})
    assert answer["Contents"][0]["Key"] == ODD
    assert answer["Contents"][0]["ETag"] == '"' + "0" * 32 + '"'
    assert answer["Contents"][0]["Owner"]["ID"] == "vault-a"
    assert answer["CommonPrefixes"] == [{"Prefix": ODD + "/"}]
    assert (answer["StartAfter"], answer["Prefix"], answer["Delimiter"]) == (ODD, ODD[:4], "/")
    assert (answer["KeyCount"], answer["MaxKeys"], answer["IsTruncated"]) == (2, 2, True)
    assert (answer["ContinuationToken"], answer["NextContinuationToken"]) == ("tok-1", "tok-2")


def test_list_objects_v1():
    answer = parsed("ListObjects", xml.list_objects_v1(listing(True), "m", ODD))
    handlers.decode_list_object(answer, {"encoding_type_auto_set": True})
    assert (answer["Marker"], answer["NextMarker"], answer["Contents"][0]["Key"]) == ("m", ODD, ODD)


def test_multipart_documents():
    answer = parsed("CreateMultipartUpload", xml.initiate_multipart("b", ODD, "up-1"))
    assert (answer["Bucket"], answer["Key"], answer["UploadId"]) == ("b", ODD, "up-1")
    answer = parsed("CompleteMultipartUpload",
                    xml.complete_multipart("http://h/b/k", "b", "k", "abc-2", {"crc32": "AAAAAA==-2"}))
    assert (answer["ETag"], answer["ChecksumCRC32"], answer["Location"]) == ('"abc-2"', "AAAAAA==-2", "http://h/b/k")
    part = xml.Part(3, T, "e" * 32, 5 << 20, {"sha256": "x" * 44})
    answer = parsed("ListParts", xml.list_parts(xml.PartsPage("b", "k", "up-1", OWNER, [part], 2, 3, 1, True)))
    assert answer["Parts"][0]["PartNumber"] == 3 and answer["Parts"][0]["ChecksumSHA256"] == "x" * 44
    assert (answer["NextPartNumberMarker"], answer["IsTruncated"], answer["Initiator"]["ID"]) == (3, True, "vault-a")
    upload = xml.Upload(ODD, "up-1", T, OWNER)
    page = xml.UploadsPage("b", "", "/", "", "", ODD, "up-1", 1, True, [upload], ["p/"])
    answer = parsed("ListMultipartUploads", xml.list_uploads(page))
    assert answer["Uploads"][0]["Key"] == ODD and answer["NextUploadIdMarker"] == "up-1"
    assert answer["CommonPrefixes"] == [{"Prefix": "p/"}]


def test_copy_delete_and_tagging_documents():
    answer = parsed("CopyObject", xml.copy_result("abc", T))
    assert answer["CopyObjectResult"]["ETag"] == '"abc"'
    answer = parsed("UploadPartCopy", xml.copy_result("abc", T, {"crc32c": "AAAAAA=="}, part=True))
    assert answer["CopyPartResult"]["ChecksumCRC32C"] == "AAAAAA=="
    errors = [("locked", S3Error("AccessDenied"))]
    answer = parsed("DeleteObjects", xml.delete_result([(ODD, None), ("v", "1")], errors, quiet=False))
    assert answer["Deleted"] == [{"Key": ODD}, {"Key": "v", "VersionId": "1"}]
    assert answer["Errors"] == [{"Key": "locked", "Code": "AccessDenied", "Message": "Access Denied"}]
    assert "Deleted" not in parsed("DeleteObjects", xml.delete_result([(ODD, None)], errors, quiet=True))
    answer = parsed("GetObjectTagging", xml.tagging({"a": "1", ODD: ""}))
    assert answer["TagSet"] == [{"Key": "a", "Value": "1"}, {"Key": ODD, "Value": ""}]


# -- request bodies as botocore writes them -----------------------------------------------


def test_complete_multipart_body_from_botocore():
    parts = [{"PartNumber": 1, "ETag": '"aa"', "ChecksumCRC32": "AAAAAA=="}, {"PartNumber": 3, "ETag": "bb"}]
    body = body_of(capture(lambda: client().complete_multipart_upload(
        Bucket="b", Key="k", UploadId="u", MultipartUpload={"Parts": parts})))
    assert xml.parse_complete_multipart(body) == [xml.CompletedPart(1, "aa", {"crc32": "AAAAAA=="}),
                                                  xml.CompletedPart(3, "bb", {})]


def test_delete_objects_body_from_botocore():
    objects = [{"Key": ODD}, {"Key": " spaced ", "VersionId": "v1"}]
    body = body_of(capture(lambda: client().delete_objects(Bucket="b", Delete={"Objects": objects, "Quiet": True})))
    assert xml.parse_delete_objects(body) == xml.DeleteRequest([(ODD, None), (" spaced ", "v1")], True)


def test_tagging_and_create_bucket_bodies_from_botocore():
    tags = [{"Key": "project", "Value": "backup"}, {"Key": ODD, "Value": ""}]
    body = body_of(capture(lambda: client().put_object_tagging(Bucket="b", Key="k", Tagging={"TagSet": tags})))
    assert xml.parse_tagging(body) == {"project": "backup", ODD: ""}
    body = body_of(capture(lambda: client().create_bucket(
        Bucket="b", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})))
    assert xml.parse_create_bucket(body) == "eu-west-1"
    assert xml.parse_create_bucket(b"") is None


# -- what is refused ----------------------------------------------------------------------

BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<Delete><Object><Key>&lol3;</Key></Object></Delete>"""
EXTERNAL = b"""<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<Delete><Object><Key>&x;</Key></Object></Delete>"""


@pytest.mark.parametrize("body", [
    BOMB, EXTERNAL, b"", b"<Delete>", b"not xml", b"<Other><Object><Key>k</Key></Object></Other>",
    b"<Delete></Delete>", b"<Delete><Object><VersionId>1</VersionId></Object></Delete>",
    b"<Delete><Quiet>maybe</Quiet><Object><Key>k</Key></Object></Delete>",
    b"<Delete>" + b"<Object><Key>k</Key></Object>" * 1001 + b"</Delete>",
    b"<Delete><Object><Key>" + b"k" * xml.MAX_BODY + b"</Key></Object></Delete>",
])
def test_malformed_delete_bodies(body):
    refused("MalformedXML", xml.parse_delete_objects, body)


@pytest.mark.parametrize("body, code", [
    (b"<CompleteMultipartUpload/>", "MalformedXML"),
    (b"<CompleteMultipartUpload><Part><PartNumber>x</PartNumber><ETag>a</ETag></Part></CompleteMultipartUpload>",
     "MalformedXML"),
    (b"<CompleteMultipartUpload><Part><PartNumber>10001</PartNumber><ETag>a</ETag></Part></CompleteMultipartUpload>",
     "MalformedXML"),
    (b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber></Part></CompleteMultipartUpload>", "MalformedXML"),
    (b"<CompleteMultipartUpload><Part><PartNumber>2</PartNumber><ETag>a</ETag></Part>"
     b"<Part><PartNumber>1</PartNumber><ETag>b</ETag></Part></CompleteMultipartUpload>", "InvalidPartOrder"),
    (b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>a</ETag></Part>"
     b"<Part><PartNumber>2</PartNumber><ETag>b</ETag></Part>"
     b"<Part><PartNumber>1</PartNumber><ETag>c</ETag></Part></CompleteMultipartUpload>", "InvalidPartOrder"),
])
def test_bad_complete_multipart_bodies(body, code):
    refused(code, xml.parse_complete_multipart, body)


def test_a_part_listed_twice_in_a_row_is_named_by_its_last_entry():
    body = (b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>a</ETag></Part>"
            b"<Part><PartNumber>1</PartNumber><ETag>b</ETag><ChecksumCRC32>AAAAAA==</ChecksumCRC32></Part>"
            b"<Part><PartNumber>2</PartNumber><ETag>c</ETag></Part></CompleteMultipartUpload>")
    assert xml.parse_complete_multipart(body) == [xml.CompletedPart(1, "b", {"crc32": "AAAAAA=="}),
                                                  xml.CompletedPart(2, "c", {})]


def tagging_body(*tags: tuple[str, str]) -> bytes:
    inner = "".join(f"<Tag><Key>{k}</Key><Value>{v}</Value></Tag>" for k, v in tags)
    return f"<Tagging><TagSet>{inner}</TagSet></Tagging>".encode()


@pytest.mark.parametrize("body", [
    tagging_body(("a", "1"), ("a", "2")),
    tagging_body(*[(f"k{i}", "v") for i in range(11)]),
    tagging_body(("k" * 129, "v")),
    tagging_body(("k", "v" * 257)),
    tagging_body(("", "v")),
])
def test_bad_tags(body):
    refused("InvalidTag", xml.parse_tagging, body)


def test_bucket_tagging_allows_fifty():
    assert len(xml.parse_tagging(tagging_body(*[(f"k{i}", "v") for i in range(50)]), max_tags=50)) == 50


def test_create_bucket_body_must_be_the_configuration():
    refused("MalformedXML", xml.parse_create_bucket, b"<Tagging/>")
    refused("MalformedXML", xml.parse_create_bucket, BOMB)

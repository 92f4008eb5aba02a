"""The S3 protocol's building blocks, free of the core and of aiohttp.

``sigv4`` authenticates a request, ``chunked`` decodes ``aws-chunked``
bodies, ``checksums`` computes ETags and ``x-amz-checksum-*`` values,
``xml`` renders and parses documents, and ``errors`` names every S3 error
and maps the core's domain errors to them. The S3 front door is built on
these; see docs/s3.md.
"""

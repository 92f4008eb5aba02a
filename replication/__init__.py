"""Replication of vaults to other places, restore from them, scrub and self-healing.

See docs/replication.md (how it works, configuration, operations) and
docs/replica-layout.md (what a bucket target holds). Wired into the server
by :mod:`replication.setup`, into the CLI by :mod:`replication.cli`.
"""

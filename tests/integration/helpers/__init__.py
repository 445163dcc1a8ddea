"""Test harness for aishell's integration tests: registries, token issuer, fault proxy, fixture images.

Everything here uses independent tools (docker-registry, skopeo, umoci, openssl/cryptography),
never aishell itself, so the tests check aishell against the real world.
"""

"""Test PKI: the development PKI of the product, made fresh in each test's folder."""

from hub.devpki import Pki, make_pki, pki_files

__all__ = ["Pki", "make_pki", "pki_files"]

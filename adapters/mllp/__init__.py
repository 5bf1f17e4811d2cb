"""MLLP (HL7 v2 Minimal Lower Layer Protocol, HL7 v2.5 Appendix C) listener, client and test peer."""

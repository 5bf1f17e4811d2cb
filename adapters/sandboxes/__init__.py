"""Local stand-ins for the peers and national services the hub talks to."""

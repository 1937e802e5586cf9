"""natkit client SDK: NAT discovery, hole punching and relay fallback (issues #5, #6;
not built yet)."""

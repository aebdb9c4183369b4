"""The federation as this cluster sees it: Serf's members and tags, the gossip key, and the view placement ranks."""

"""The home set: who is steward now (`stewardship`), when an entry ahead is silent (`silence`), and the watch that pings it (`watch`)."""

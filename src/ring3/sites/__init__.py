"""Virtual hosts, locations and the rules on them."""

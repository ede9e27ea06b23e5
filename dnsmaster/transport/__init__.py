"""How the master reaches a slave: the SSH and local channels, host keys, DNS queries."""

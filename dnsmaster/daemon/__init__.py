"""``dnsmaster run``: the long-running loop, its slave workers, the watcher and hooks."""

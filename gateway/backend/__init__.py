"""The backend side: the upstream client and its error map, routing among replicas, the
backend's load, forwarding, and the chunk formats engines reuse KV caches by."""

"""The distributed hash table hosted by the overlay: signed, replicated records with atomic create,
multi-value put, get, owner-only delete and TTL."""

//! The daemon's outer surface: private files whatever the umask, the docs page's policy,
//! idempotency keys reused with another body, and HEAD.

"""The runtime's security profile: the input filter, output redaction and the hash-chained
audit log (docs/security.md). Plain Python, no torch and no web framework: the server hooks
these in (`r1_runtime.server.review`)."""
